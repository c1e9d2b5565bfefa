"""Shared helpers for the write-behind tests (the journal_prefix fixture is in conftest)."""

from __future__ import annotations

from django_tiercache import write_behind
from tests.testapp.models import Counter


def configure(settings, **values):
    """Change some WRITE_BEHIND settings of the test's journal."""
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "WRITE_BEHIND": {**settings.TIERCACHE["WRITE_BEHIND"], **values},
    }


def hits(pk):
    return Counter.objects.filter(pk=pk).values_list("hits", flat=True).first()


def clashing_batch():
    """Three pending rows; the second takes the first's unique name and must fail."""
    a, b, c = (Counter.objects.create(name=n) for n in "abc")
    for row, value in ((a, 1), (b, 2), (c, 3)):
        row.hits = value
    b.name = "a"
    for row in (a, b, c):
        write_behind.save(row)
    return a, b, c
