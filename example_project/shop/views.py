"""Cache-aside reads with tags; saving a product invalidates them (see apps.py)."""

from django.contrib import messages
from django.core.cache import cache
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from django_tiercache import aget_object, cached_queryset, get_object, write_behind

from .forms import ProductForm
from .models import Product, ProductViews

PRODUCT_TIMEOUT = 300


def product_key(pk: int) -> str:
    return f"product:{pk}"


def product_tags(pk: int) -> list[str]:
    # One tag for this product, one for every product: a bulk price change can
    # invalidate "shop.product" without knowing which keys exist.
    return [f"shop.product:{pk}", "shop.product"]


@require_GET
def product_list(request: HttpRequest) -> HttpResponse:
    # Cached under the model tag "shop.product": any product's save invalidates it.
    products = cached_queryset(Product.objects.order_by("name"))
    return render(request, "shop/product_list.html", {"products": products})


@require_GET
def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    key = product_key(pk)
    # Looked up on its own first only so the page can say whether it was a hit.
    product = cache.get(key)
    hit = product is not None
    if product is None:
        product = cache.get_or_set(
            key,
            lambda: get_object_or_404(Product, pk=pk),
            timeout=PRODUCT_TIMEOUT,
            tags=product_tags(pk),
        )
    context = {
        "product": product,
        "views": count_view(product.pk),
        "cache_key": key,
        "cache_hit": hit,
        "partition": cache.partition_for(key),
    }
    return render(request, "shop/product_detail.html", context)


async def product_json(request: HttpRequest, pk: int) -> JsonResponse:
    """An async view: the cache is read on the event loop (under an ASGI server,
    no thread is involved); a miss's query runs in a thread, as Django requires."""
    try:
        product = await aget_object(Product, pk)
    except Product.DoesNotExist:
        raise Http404("No such product.") from None
    return JsonResponse({"id": product.pk, "name": product.name, "price": str(product.price)})


def count_view(pk: int) -> ProductViews:
    """One more view of the product, written behind: Redis now, the database in a batch.

    An increment (F("count") + 1): increments from every process add up in the
    journal and land as one UPDATE, so no view is lost to a race. get_object
    reads the pending count back (read-your-writes), so the page shows it
    before any worker ran.
    """
    try:
        views = get_object(ProductViews, pk)
    except ProductViews.DoesNotExist:
        # The first view: a full save, which the drain inserts (two first views
        # at the same instant may count once).
        views = ProductViews(product_id=pk, count=1, last_viewed_at=timezone.now())
        write_behind.save(views)
        return views
    views.count = F("count") + 1
    views.last_viewed_at = timezone.now()
    write_behind.save(views, update_fields=["count", "last_viewed_at"])
    return get_object(ProductViews, pk)


@require_http_methods(["GET", "POST"])
def product_edit(request: HttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product, pk=pk)
    # Binding the form writes the posted values onto the instance; keep the
    # saved name for the page heading in case validation fails.
    saved_name = product.name
    form = ProductForm(request.POST or None, instance=product)
    if request.method == "POST" and form.is_valid():
        form.save()  # the model's registration invalidates its tags on commit
        messages.success(request, f"Saved {product.name}; its cache entries were invalidated.")
        return redirect(product)
    return render(
        request,
        "shop/product_form.html",
        {"form": form, "product": product, "saved_name": saved_name},
    )
