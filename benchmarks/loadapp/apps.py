from django.apps import AppConfig
from django.conf import settings


class LoadAppConfig(AppConfig):
    name = "benchmarks.loadapp"
    label = "loadapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Model invalidation for the two TierCache systems only: the others invalidate by hand
        # (cache-aside) or by their own signals (cacheops), or do not cache at all.
        if settings.LOAD_SYSTEM.startswith("tier"):
            import django_tiercache

            from .models import Product

            django_tiercache.register(Product)
