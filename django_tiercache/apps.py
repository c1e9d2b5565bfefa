from django.apps import AppConfig


class TierCacheConfig(AppConfig):
    name = "django_tiercache"
    verbose_name = "Tier cache"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # Importing registers the checks (Django dedupes registrations by function)
        # and adds invalidation's signal wiring to the registry.
        from . import checks  # noqa: F401
        from .orm import invalidation, raw_sql  # noqa: F401
        from .orm.registry import wire_pending

        # After invalidation: write-behind's hooks wrap its. reads lets get_object
        # see pending writes.
        from .write_behind import mixed, reads  # noqa: F401

        # Models registered with @register while models were loading get their
        # signals now that relations can be read; ready() may run more than once
        # (tests, some management commands): wire_pending() wires each model once.
        wire_pending()
        # Raw SQL and the database's own cascades, seen at the SQL level.
        raw_sql.install()
