from django.db import models
from django.urls import reverse


class Customer(models.Model):
    name = models.CharField(max_length=120)
    email = models.EmailField(unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    name = models.CharField(max_length=120, unique=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    description = models.TextField(blank=True)
    stock = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("shop:product-detail", kwargs={"pk": self.pk})


class ProductViews(models.Model):
    """How often a product page was seen, and when last: written on every page view,
    so through write-behind (see apps.py and views.product_detail)."""

    product = models.OneToOneField(
        Product, primary_key=True, on_delete=models.CASCADE, related_name="views"
    )
    count = models.PositiveIntegerField(default=0)
    last_viewed_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.product_id}: {self.count} views"
