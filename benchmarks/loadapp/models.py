"""The shop's one model (no migrations: bench_load.py makes the table with schema_editor)."""

from django.db import models


class Product(models.Model):
    name = models.CharField(max_length=100)
    description = models.TextField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    stock = models.IntegerField(default=0)
    # Bumped by every write; a reader that gets an older version than one already committed
    # (benchmarks/loadapp/shared.py keeps the committed versions outside any cache) saw a stale row.
    version = models.IntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"
