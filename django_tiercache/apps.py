from django.apps import AppConfig


class TierCacheConfig(AppConfig):
    name = "django_tiercache"
    verbose_name = "Tier cache"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Importing registers the checks (Django dedupes registrations by function)
        # and adds invalidation's signal wiring to the registry.
        from . import checks, invalidation  # noqa: F401
        from .registry import wire_pending
        from .write_behind import mixed  # noqa: F401 - after invalidation: its hooks wrap theirs

        # Models registered with @register while models were loading get their
        # signals now that relations can be read; ready() may run more than once
        # (tests, some management commands): wire_pending() wires each model once.
        wire_pending()
