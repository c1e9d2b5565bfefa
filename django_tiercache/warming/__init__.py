"""Cache warming: warmers, plans and the batch runner.

A *warmer* is a function registered under a name that returns what to cache:
an iterable of ``(key, value)`` or ``(key, value, tags)`` items, or a QuerySet
of a registered model, whose instances are then cached as get_object caches
them::

    @django_tiercache.warmer("products")
    def products():
        for p in Product.objects.filter(is_active=True).iterator():
            yield f"product:{p.pk}:card", render_card(p), [f"shop.product:{p.pk}"]

``manage.py warm_cache`` and the Celery task ``django_tiercache.tasks.warm_cache``
build a ``Request``, ``plan()`` it (every name, model, filter and cache alias is
checked before anything is written) and run each planned ``Job`` with a
``Runner``. Items are pulled in batches, at most ``2 * concurrency + 1`` batches
in memory at once, so memory stays flat however many a warmer yields; each
batch is written by one of ``concurrency`` threads with one call per partition.

Model instances (QuerySet warmers, ``--model``) go through the same
``get_or_set_many`` as get_object: primary keys are read first, tag tokens are
snapshotted before the rows are loaded, and only entries that are not cached
are written, so an instance changed while it was being loaded is never cached
and a valid cached instance (current, by model invalidation) is never replaced.
"""

from .jobs import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    Job,
    Request,
    WarmingError,
    check_alias,
    registered_model,
)
from .planning import parse_filters, plan
from .runner import Progress, Result, Runner, Tally, run
from .warmers import Warmer, discover, registered_warmers, unregister_warmer, warmer

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CONCURRENCY",
    "Job",
    "Progress",
    "Request",
    "Result",
    "Runner",
    "Tally",
    "Warmer",
    "WarmingError",
    "check_alias",
    "discover",
    "parse_filters",
    "plan",
    "registered_model",
    "registered_warmers",
    "run",
    "unregister_warmer",
    "warmer",
]
