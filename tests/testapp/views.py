from django.db import connection
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Product


@csrf_exempt
def rename(request, pk):
    product = Product.objects.get(pk=pk)
    product.name = request.POST["name"]
    product.save()
    return HttpResponse("in transaction" if connection.in_atomic_block else "autocommit")
