"""The rows bench_correctness.py reads through each cache (no migrations: made by schema_editor)."""

from django.db import models


class Parent(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Item(models.Model):
    # DO_NOTHING in Django, ON DELETE CASCADE in the database (added by the benchmark):
    # the database deletes the items, and no signal says so.
    parent = models.ForeignKey(Parent, null=True, on_delete=models.DO_NOTHING, db_constraint=False)
    version = models.IntegerField(default=0)
    updated = models.DateTimeField(null=True)  # the Now() case: stamped by the database

    def __str__(self) -> str:
        return f"item {self.pk} v{self.version}"
