"""Celery tasks (needs the ``celery`` extra): warm the cache, drain write-behind.

Celery finds this module when the project's Celery app calls
``app.autodiscover_tasks()``, so a worker knows both tasks: ``warm_cache`` and
the write-behind drain (``django_tiercache.drain_write_behind``, defined in
write_behind/tasks.py and imported here for that reason). Schedule them like
any task, e.g. after a deploy::

    from django_tiercache.tasks import beat_schedule, warm_cache
    warm_cache.delay(names=["products"], only_missing=True)
    app.conf.beat_schedule = {**app.conf.beat_schedule, **beat_schedule()}
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import warming
from .write_behind.tasks import beat_schedule, drain_write_behind

__all__ = ["beat_schedule", "drain_write_behind", "warm_cache"]


@shared_task(name="django_tiercache.warm_cache")
def warm_cache(names: list[str] | None = None, **options: Any) -> dict[str, Any]:
    """Run warmers as ``manage.py warm_cache`` does, with the same options.

    Keyword arguments are the command's options with underscores: ``all``,
    ``models`` (--model, a list), ``filters`` (--filter, a list), ``cache``,
    ``batch_size``, ``concurrency``, ``only_missing``, ``dry_run``, ``timeout``,
    ``hot``. Returns ``{"ok": bool, "failed": n, "results": [per warmer]}``;
    a bad request (unknown warmer, model, filter or alias) raises WarmingError
    before anything is written, so the task fails.
    """
    unknown = set(options) - set(warming.Request.__dataclass_fields__)
    if unknown:
        raise TypeError(f"warm_cache() got unknown options: {', '.join(sorted(unknown))}")
    results = warming.run(warming.Request(names=list(names or ()), **options))
    return {
        "ok": all(r.ok for r in results),
        "failed": sum(r.failed for r in results),
        "results": [r.as_dict() for r in results],
    }
