"""write_through.save: the database first, then the cache.

Filling the cache after the commit never fails the save: an error there is
logged and counted, and the next read loads the row. The save itself is a
registered model's save: when its invalidation cannot be made safe (its write
locks cannot be placed, e.g. its only partition is down and there is no
witness), it raises InvalidationIncomplete before its query, and nothing is
written (see the README, "The guarantee").

::

    from django_tiercache import write_through

    write_through.save(product)  # committed, and get_object(Product, pk) is a hit
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import models, router, transaction

from ..backend import tier_cache
from ..orm.cache_aside import ABSENT, model_timeout, object_entry
from ..orm.loading import loader
from ..orm.registry import registration_for

logger = logging.getLogger("django_tiercache.write_through")

failures = {"count": 0}


def save(obj: models.Model, **save_kwargs: Any) -> None:
    """``obj.save(**save_kwargs)``, then fill get_object's entry once the write commits.

    The entry is filled with the row as committed, read back through the tagged
    cache-aside path, so a concurrent writer's newer row is never hidden under
    an older value. A cache error while filling is logged and counted; the save
    stands. The save raises InvalidationIncomplete, before its query, where the
    model's invalidation cannot be made safe.
    """
    registration = registration_for(type(obj))  # NotRegistered before anything is written
    obj.save(**save_kwargs)
    using = save_kwargs.get("using") or router.db_for_write(type(obj))
    transaction.on_commit(lambda: _fill(obj, registration), using=using)


def _fill(obj: models.Model, registration: Any) -> None:
    model = type(obj)
    key, _, tags = object_entry(obj)
    try:
        tier_cache(registration.cache_alias).get_or_set(
            key,
            lambda: loader(model._base_manager).filter(pk=obj.pk).first() or ABSENT,
            timeout=model_timeout(registration.timeout),
            tags=tags,
        )
    except Exception as exc:  # noqa: BLE001 - the database has the write; the cache is optional
        failures["count"] += 1
        logger.warning(
            "write_through: %s saved, cache not filled (%s: %s)",
            model._meta.label,
            type(exc).__name__,
            exc,
        )
