"""write_behind.save/delete/flush/stats: the public face of the journal.

::

    from django_tiercache import write_behind

    product.views = F("views") + 1
    write_behind.save(product, update_fields=["views"])  # Redis now, the database later
    write_behind.flush()                                  # or let the Celery task drain

``F("field") + n`` (or ``- n``) queues an increment: increments from any number
of processes add up in the journal and land as one ``UPDATE ... SET views =
views + total``, so no count is lost to a read-modify-write race.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.db import models
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..orm.registry import registration_for
from . import increments, rows
from . import settings as wb_settings
from .drain import Outcome, drain
from .exceptions import InvalidWrite, NotWriteBehind, WriteBehindUnavailable
from .journal import get_journal
from .server import JournalDown, NotReplicated

logger = logging.getLogger("django_tiercache.write_behind")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)

# Counted here because the journal cannot be reached when they happen.
_local_counts = {"fallback_saves": 0, "not_replicated": 0}
_counts_lock = threading.Lock()


def save(obj: models.Model, update_fields: Any = None) -> int | None:
    """Queue `obj`'s state (or only `update_fields`) for the database; returns its version.

    The database gets it when a drain runs (the Celery task, or ``flush()``);
    until then ``get_object`` returns this state. When the journal is unreachable,
    holds MAX_PENDING rows, or fewer than REPLICAS replicas confirm the entry within
    REPLICA_TIMEOUT, the row is saved at once and None is returned (or
    WriteBehindUnavailable raised, with ON_UNAVAILABLE = "raise").

    Raises NotWriteBehind (a NotRegistered) for a model not registered with
    ``write_behind=True`` and InvalidWrite for an instance without a primary key,
    an empty or unknown ``update_fields``, or a value the database would refuse
    (NaN, infinities, text over max_length...); nothing is queued then.
    """
    _check_model(obj)
    if update_fields is not None:
        if isinstance(update_fields, str):
            raise InvalidWrite(
                f"update_fields must be a list of field names, not {update_fields!r}"
            )
        update_fields = list(update_fields)
        if not update_fields:
            # Model.save(update_fields=[]) writes nothing and returns None; here None
            # means "saved directly", so an empty write is refused rather than faked.
            raise InvalidWrite("update_fields=[] names no field: there is nothing to queue")
    row = rows.row_id(type(obj), obj.pk)
    fields = rows.encode(obj, row, update_fields)
    op = "save" if update_fields is None else "update"
    return _enqueue(obj, row, op, fields, lambda: obj.save(update_fields=update_fields))


def delete(obj: models.Model) -> int | None:
    """Queue the row's deletion; ``get_object`` raises DoesNotExist from now on.

    The drain deletes it with ``QuerySet.delete()``, so cascades and delete
    signals run then. Same errors and fallback as ``save()``.
    """
    _check_model(obj)
    return _enqueue(obj, rows.row_id(type(obj), obj.pk), "delete", {}, obj.delete)


def flush(timeout: float | None = None) -> int:
    """Drain every due pending write now, in this process; returns rows written.

    Rows waiting for a retry's backoff stay. Raises the database's error if it
    is unreachable (the rows stay pending, unharmed).
    """
    outcome: Outcome = drain(timeout=timeout)
    if outcome.unavailable is not None:
        raise outcome.unavailable
    return outcome.written


def stats() -> dict[str, Any]:
    """Figures: pending, oldest_pending_age (s), in_flight, retrying, dead_letters,
    written, failed, and counters of queued writes, backpressure and fallbacks
    (fallback_saves; not_replicated: enqueues no replica confirmed, in this process)."""
    figures = get_journal().stats()
    figures["fallback_saves"] = _local_counts["fallback_saves"]
    figures["not_replicated"] = _local_counts["not_replicated"]
    return figures


def _check_model(obj: models.Model) -> None:
    model = type(obj)
    if not isinstance(obj, models.Model):
        raise TypeError(f"write_behind needs a model instance, got {model.__name__}")
    if not registration_for(model).write_behind:
        raise NotWriteBehind(
            f"{model._meta.label} is registered without write_behind; call "
            f"django_tiercache.register({model.__name__}, write_behind=True) to queue its writes"
        )
    if obj.pk is None:
        raise InvalidWrite(
            f"{model.__name__} instance has no primary key: write-behind addresses rows by "
            f"primary key; save it once with {model.__name__}.save() or set its pk"
        )


# An increment reads the row's pending value and writes the sum only if nobody
# wrote it meanwhile (scripts.ENQUEUE's -3); this many tries, then ON_UNAVAILABLE.
INCREMENT_TRIES = 100


def _enqueue(
    obj: models.Model, row: str, op: str, fields: dict[str, str], direct: Any
) -> int | None:
    config = wb_settings.get()
    try:
        version, pending = _enqueue_once(row, op, fields, config)
    except NotReplicated as exc:
        # The primary holds the entry anyway. With "save", direct() is a plain
        # Model.save()/delete(), whose pre_save hook (mixed.py) takes the row's
        # pending state from the journal, writes it first and its own state on
        # top: the entry can never land after it. With "raise", it stays pending
        # on the primary: a later drain writes it (a newer save or direct write of
        # the row lands after it, as always), unless a failover loses it.
        with _counts_lock:
            _local_counts["not_replicated"] += 1
        _unavailable(config, direct, f"journal entry not confirmed by a replica ({exc})", exc)
        return None
    except REDIS_ERRORS as exc:
        quiet = isinstance(exc, JournalDown)  # the failure that opened it was logged
        _unavailable(config, direct, f"journal unreachable ({exc})", quiet=quiet)
        return None
    if version == -1:
        _unavailable(config, direct, f"journal full ({pending} rows pending)")
        return None
    if version == -3:
        _unavailable(config, direct, f"{row}: increments kept racing ({INCREMENT_TRIES} tries)")
        return None
    if version == -2:
        raise InvalidWrite(
            f"{row}: save(update_fields=...) of a row whose pending write deletes it; "
            f"save every field to recreate it"
        )
    if pending % config["BATCH_SIZE"] == 0 and config["TRIGGER"]:
        _trigger()
    return version


def _enqueue_once(row: str, op: str, fields: dict[str, str], config: dict) -> tuple[int, int]:
    """Enqueue; an increment is added to the row's pending value first (increments.py)."""
    journal = get_journal()
    if not increments.has_increments(fields):
        return journal.enqueue(row, op, fields, config["MAX_PENDING"])
    version, pending = -3, 0
    for _ in range(INCREMENT_TRIES):
        expected = journal.stored(row, increments.names(fields))
        merged = increments.merge(row, fields, expected)
        version, pending = journal.enqueue(row, op, merged, config["MAX_PENDING"], expected)
        if version != -3:
            break
    return version, pending


def _unavailable(
    config: dict,
    direct: Any,
    why: str,
    unreplicated: NotReplicated | None = None,
    quiet: bool = False,
) -> None:
    if config["ON_UNAVAILABLE"] == "raise":
        if unreplicated is not None:
            raise WriteBehindUnavailable(
                f"write-behind: {why}; the database was not written, and the entry stands "
                f"unconfirmed on the journal's primary: a drain may still write it, a failover "
                f"may lose it"
            ) from unreplicated
        raise WriteBehindUnavailable(f"write-behind: {why}; nothing was written")
    log = logger.debug if quiet else logger.warning
    log("write-behind: %s; writing to the database at once", why)
    with _counts_lock:
        _local_counts["fallback_saves"] += 1
    direct()


def _trigger() -> None:
    """Ask a worker to drain now; the message carries no data, only the trigger."""
    try:
        from .tasks import trigger_drain
    except ImportError:  # celery is an optional extra
        return
    trigger_drain()
