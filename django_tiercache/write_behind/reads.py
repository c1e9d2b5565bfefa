"""Read-your-writes: get_object/get_objects see pending state before the database does."""

from __future__ import annotations

import logging
from typing import Any

from django.db import models, router
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..orm.cache_aside import add_pending_reader
from . import rows
from .journal import get_journal

logger = logging.getLogger("django_tiercache.write_behind")


def with_pending(
    model: type[models.Model], pks: list[Any], found: dict[Any, models.Model]
) -> dict[Any, models.Model]:
    """`found` ({pk: instance} as read through the cache) with pending writes applied.

    One round trip to the journal. If it is unreachable, the database's state is
    returned (and logged): pending writes cannot be read, nor drained, then.
    """
    ids = {rows.row_id(model, pk): pk for pk in pks}
    try:
        pending = get_journal().latest(list(ids))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        logger.warning("write-behind: journal unreachable, reading without it (%s)", exc)
        return found
    if not pending:
        return found
    result = dict(found)
    db = router.db_for_read(model)
    for row, (op, fields) in pending.items():
        pk = ids[row]
        if op == "delete":
            result.pop(pk, None)
        elif op == "save":
            result[pk] = rows.build(model, pk, fields, db)
        elif pk in result:
            result[pk] = rows.overlay(result[pk], fields)
    return {pk: result[pk] for pk in pks if pk in result}


add_pending_reader(with_pending)
