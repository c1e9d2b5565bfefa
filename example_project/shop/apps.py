from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import django_tiercache

        from .models import Product, ProductViews

        # Saving a product now invalidates "shop.product:<pk>" and "shop.product",
        # the tags the product pages cache under, with no code in the views.
        django_tiercache.register(Product)
        # Every page view writes its counter: the write lands in Redis at once and
        # reaches the database in batches (a Celery worker, or manage.py flush_write_behind).
        django_tiercache.register(ProductViews, write_behind=True)
