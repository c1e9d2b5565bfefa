"""No tables: one unmanaged model gives the statistics page its admin entry and permissions.

``Stats`` is what the admin index lists as "Cache statistics" (model name
"stats", hence /admin/django_tiercache/stats/), and what the permissions
django_tiercache.view_cachestats and change_cachestats belong to. An instance
stands for one cache alias, so that actions are logged against it in the
admin's history (LogEntry). It is never saved or queried.
"""

from django.db import models


class Stats(models.Model):
    alias = models.CharField(max_length=100, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "cache statistics"
        verbose_name_plural = "cache statistics"
        # Named for what they guard, not after the model (Django's default would
        # be view_stats): the permission names the issue and the docs give.
        default_permissions = ()
        permissions = [
            ("view_cachestats", "Can view cache statistics"),
            ("change_cachestats", "Can act on caches (invalidate tags, reset statistics...)"),
        ]

    def __str__(self) -> str:
        return f"cache {self.alias!r}"
