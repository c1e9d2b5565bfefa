"""Read-your-writes: get_object/get_objects see pending state before the database does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import models, router
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..orm.cache_aside import add_pending_reader
from . import rows
from .journal import get_journal

logger = logging.getLogger("django_tiercache.write_behind")

Found = dict[Any, models.Model]


def pending_for(model: type[models.Model], pks: list[Any]) -> Callable[[Found], Found]:
    """Read the rows' pending writes now (before the cache: see cache_aside), and return
    what applies them to {pk: instance} as read through the cache afterwards.

    One round trip to the journal. If it is unreachable, the database's state is
    returned (and logged): pending writes cannot be read, nor drained, then. A
    pending state this site did not sign is left out (journal.latest), and so is
    one that no longer decodes; the drain quarantines both.
    """
    ids = {}
    for pk in pks:
        try:
            ids[rows.row_id(model, pk)] = pk
        except rows.InvalidWrite:
            continue  # no such row can be pending
    try:
        pending = get_journal().latest(list(ids)) if ids else {}
    except (RedisConnectionError, RedisTimeoutError) as exc:
        logger.warning("write-behind: journal unreachable, reading without it (%s)", exc)
        pending = {}
    decoded = {}
    for row, (op, fields) in pending.items():
        try:
            decoded[ids[row]] = (op, rows.decode(model, row, fields))
        except rows.BadRow as exc:
            logger.warning("write-behind: pending state of %s ignored (%s)", row, exc)

    def apply(found: Found) -> Found:
        if not decoded:
            return found
        result = dict(found)
        db = router.db_for_read(model)
        for pk, (op, values) in decoded.items():
            if op == "delete":
                result.pop(pk, None)
            elif op == "save":
                result[pk] = rows.overlay(
                    rows.build(model, pk, values.values, db), values.deltas_only()
                )
            elif pk in result:
                result[pk] = rows.overlay(result[pk], values)
        return {pk: result[pk] for pk in pks if pk in result}

    return apply


add_pending_reader(pending_for)
