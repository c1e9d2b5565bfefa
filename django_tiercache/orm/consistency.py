"""The consistency sampler: a small share of get_object hits checked against the database.

With ``TIERCACHE["CONSISTENCY_SAMPLE_RATE"]`` above 0 (e.g. 0.0001, one hit in
10,000), a sampled hit of ``get_object``/``get_objects`` is handed to a
background thread, never checked on the request's time. After
``CONSISTENCY_GRACE`` seconds the thread reads the row from the database and the
entry from the cache again:

- the database agrees with the value served: consistent;
- it does not, but the cache no longer holds that value (an invalidation came,
  as it must after a write): consistent, the cache caught up within the grace;
- the database disagrees and the cache still serves the old value: checked once
  more after another grace (a write that committed just before the read may
  still be invalidating); still so, the sample is *stale*, logged with its key,
  tags and ages.

Each sample is counted through the cache's observers (stats shows "consistency:
N nines" over the last hour and since reset, and Prometheus
``tiercache_consistency_samples``). Rows of write-behind models are not sampled:
their pending writes make the database legitimately older than what is served.
At most ``QUEUE_LIMIT`` samples wait; past that they are dropped, not queued.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.db import connections, models

from .. import conf
from ..backend import tier_cache
from ..storage.observers import observers_of
from .loading import loader
from .registry import pk_tag, registration_for

logger = logging.getLogger("django_tiercache.consistency")

QUEUE_LIMIT = 1000
_queue: queue.Queue[Sample] = queue.Queue(QUEUE_LIMIT)
_worker_lock = threading.Lock()
_worker: threading.Thread | None = None


@dataclass
class Sample:
    model: type[models.Model]
    pk: Any
    served: models.Model
    key: str
    alias: str
    read_at: float  # monotonic()


def sampling() -> bool:
    return bool(conf.get_config()["CONSISTENCY_SAMPLE_RATE"])


def should_sample() -> bool:
    rate = conf.get_config()["CONSISTENCY_SAMPLE_RATE"]
    return random.random() < rate  # noqa: S311 - a sample, not a secret


def offer(model: type[models.Model], hits: dict[str, Any], keys: dict[str, Any]) -> None:
    """Maybe sample some of these hits ({key: instance}); never blocks, never raises."""
    registration = registration_for(model)
    if registration.write_behind:
        return
    for key, served in hits.items():
        if not isinstance(served, models.Model) or not should_sample():
            continue
        sample = Sample(model, keys[key], served, key, registration.cache_alias, time.monotonic())
        try:
            _queue.put_nowait(sample)
        except queue.Full:
            return
        _ensure_worker()


def _ensure_worker() -> None:
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, name="tiercache-consistency", daemon=True)
            _worker.start()


def _work() -> None:
    while True:
        sample = _queue.get()
        try:
            check(sample)
        except Exception:  # noqa: BLE001 - a sampler must never take anything down
            logger.exception("consistency sample of %s failed", sample.key)
        finally:
            _queue.task_done()
            if _queue.empty():
                connections.close_all()  # this thread's connections, between bursts


def check(sample: Sample) -> bool:
    """Check one sample (see the module's docstring); returns whether it was consistent."""
    grace = float(conf.get_config()["CONSISTENCY_GRACE"])
    consistent = True
    for attempt in range(2):
        time.sleep(max(0.0, sample.read_at + grace * (attempt + 1) - time.monotonic()))
        source = loader(sample.model._base_manager).filter(pk=sample.pk).first()
        if source is not None and _same(source, sample.served):
            break
        now_cached = tier_cache(sample.alias).get(sample.key)
        if now_cached is None or not (
            isinstance(now_cached, models.Model) and _same(now_cached, sample.served)
        ):
            break  # the entry was invalidated or replaced: the cache caught up
    else:
        consistent = False
        logger.error(
            "consistency sample: %s serves a value the database no longer has, %.1f s after "
            "it was read (tags %s)",
            sample.key,
            time.monotonic() - sample.read_at,
            [pk_tag(sample.model, sample.pk)],
        )
    for observer in observers_of(tier_cache(sample.alias)):
        observer.sampled(consistent)
    return consistent


def _same(a: models.Model, b: models.Model) -> bool:
    return all(
        field.value_from_object(a) == field.value_from_object(b)
        for field in a._meta.concrete_fields
    )


def wait_idle(timeout: float = 30.0) -> bool:
    """Wait until every queued sample is checked (for tests and shutdown)."""
    deadline = time.monotonic() + timeout
    while _queue.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    return not _queue.unfinished_tasks
