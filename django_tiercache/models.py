"""The app's models: the statistics page's permissions, and the witness table.

One unmanaged model (no table) gives the statistics page its admin entry and permissions.

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


class MissedInvalidation(models.Model):
    """What a partition missed, where it outlives any Redis outage (the witness).

    Used only by caches with OPTIONS["WITNESS"] = "database" (see
    orm/witness.py): a row per cache and partition counts invalidations the
    partition missed, and notes until when (database clock, ms) a lease vouched
    for by this table may run. Touched on the failure path, and by lease
    renewals while a partition's peers cannot all answer.
    """

    cache = models.CharField(max_length=200)
    partition = models.CharField(max_length=32)
    misses = models.BigIntegerField(default=0)
    granted_until_ms = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cache", "partition"], name="tiercache_witness_unique")
        ]

    def __str__(self) -> str:
        return f"{self.cache} {self.partition}: {self.misses} missed"


class LandedIncrement(models.Model):
    """The journal version of a row's increments the drain has written (write-behind).

    Written in the same transaction as the ``UPDATE ... SET f = f + n``: a drain
    killed after its commit but before it acknowledged the journal leaves the
    increment pending, and the next drain, finding its version here, acknowledges
    it without adding it twice. Keyed by the journal's epoch and the row (hashed),
    so a journal lost and begun again never matches an old record; rows older than
    a day are pruned (write_behind/landed.py).
    """

    key = models.CharField(max_length=32, primary_key=True)
    version = models.BigIntegerField()
    landed_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key} at version {self.version}"
