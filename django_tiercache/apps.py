from django.apps import AppConfig


class TierCacheConfig(AppConfig):
    name = "django_tiercache"
    verbose_name = "Tier cache"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Importing registers the checks (Django dedupes registrations by function).
        from . import checks  # noqa: F401
