"""Direct writes to rows with pending write-behind state: the pending state lands first.

The rule: a plain ``Model.save()``, ``Model.delete()``, ``QuerySet.update()``,
``bulk_update()`` or ``bulk_create()`` of a write-behind model first writes the
pending states of the rows it touches (for ``update()``, which cannot know its
rows, every pending row of the model), in the same transaction, just before its
own statement. So both paths keep their order: the direct write, being later,
lands on top, and the older pending state can never land after it. The pending
state is acknowledged when the transaction commits; if it rolls back, the state
is still pending and drains as usual.

The rows are taken from any drainer holding them (scripts.CLAIM_ROWS): a
drainer that has not yet written them sees its claim gone and skips them; one
that has holds their row locks, so the direct write waits for its commit.

A pending state that fails here (a constraint, bad data) becomes a dead letter
at once, so it cannot land later over the direct write; the direct write goes on.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from django.db import models, router, transaction
from django.db.models.signals import pre_delete, pre_save
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..orm.registry import is_registered, registration_for, wiring
from . import rows
from . import settings as wb_settings
from .drain import UNAVAILABLE, applying, order_writers, quarantine_bad, write_once
from .exceptions import InvalidWrite
from .journal import Claimed, get_journal
from .server import JournalDown

logger = logging.getLogger("django_tiercache.write_behind")

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


def land_pending_first(model: type[models.Model], pks: Iterable[Any] | None, using: str) -> None:
    """Write the pending states of these rows (None: all the model's) ahead of a direct write."""
    if getattr(applying, "active", False):
        return
    token = f"direct-{uuid.uuid4().hex}"
    try:
        journal = get_journal()
        wanted = journal.rows_of(model) if pks is None else _row_ids(model, pks)
        claimed = journal.claim_rows(token, wanted, wb_settings.get()["CLAIM_TIMEOUT"])
        claimed = quarantine_bad(journal, token, claimed)
    except REDIS_ERRORS as exc:
        log = logger.debug if isinstance(exc, JournalDown) else logger.warning
        log(
            "write-behind: journal unreachable before a direct write to %s (%s); a pending "
            "state of these rows, if any, may land after it",
            model._meta.label,
            exc,
        )
        return
    if claimed:
        _write_first(journal, token, claimed, using)


def _row_ids(model: type[models.Model], pks: Iterable[Any]) -> list[str]:
    """The journal's names of these rows; a pk its field refuses names no pending row."""
    found = []
    for pk in pks:
        try:
            found.append(rows.row_id(model, pk))
        except InvalidWrite:
            continue
    return found


def _write_first(journal: Any, token: str, claimed: list[Claimed], using: str) -> None:
    applying.active = True
    try:
        with transaction.atomic(using=using):
            # After a drain that confirmed these rows before we took them commits:
            # its (older) state then lands before ours, never after (drain.py).
            order_writers(claimed, using)
            good, bad = write_once(journal, claimed, using)
    except UNAVAILABLE:
        journal.release(token, claimed)
        raise
    finally:
        applying.active = False
    for item, error in bad:
        journal.fail(token, item, f"{error} (before a direct write)", 0, 0)
    if good:
        # Not waited for (drain.py waits): the direct write has committed and
        # nothing stops after it, so a WAIT would only add a round trip.
        transaction.on_commit(lambda: journal.ack(token, good), using=using)


def _before_save(sender: type, instance: models.Model, using: str = "default", **_: Any) -> None:
    if instance.pk is not None:
        land_pending_first(sender, [instance.pk], using)


def _before_delete(sender: type, instance: models.Model, using: str = "default", **_: Any) -> None:
    if instance.pk is not None:
        land_pending_first(sender, [instance.pk], using)


def _uid(receiver: Any, model: type[models.Model]) -> str:
    return f"django_tiercache:write_behind:{receiver.__name__}:{model._meta.label_lower}"


def connect(model: type[models.Model]) -> None:
    if not registration_for(model).write_behind:
        return
    pre_save.connect(_before_save, sender=model, dispatch_uid=_uid(_before_save, model))
    pre_delete.connect(_before_delete, sender=model, dispatch_uid=_uid(_before_delete, model))
    install_queryset_hooks()


def disconnect(model: type[models.Model]) -> None:
    pre_save.disconnect(sender=model, dispatch_uid=_uid(_before_save, model))
    pre_delete.disconnect(sender=model, dispatch_uid=_uid(_before_delete, model))


# -- QuerySet methods that send no signals --


def _is_write_behind(model: type[models.Model]) -> bool:
    return is_registered(model) and registration_for(model).write_behind


def _wrap(method: Any, rows_of: Any) -> Any:
    @functools.wraps(method)
    def wrapper(qs: models.QuerySet, *args: Any, **kwargs: Any) -> Any:
        if _is_write_behind(qs.model) and not getattr(applying, "active", False):
            if args and not isinstance(args[0], (list, tuple)):
                args = (list(args[0]), *args[1:])  # objs may be a generator: read it once
            using = qs._db or router.db_for_write(qs.model)  # type: ignore[attr-defined]
            land_pending_first(qs.model, rows_of(*args, **kwargs), using)
        return method(qs, *args, **kwargs)

    wrapper.tiercache_write_behind = True  # type: ignore[attr-defined]
    return wrapper


def _every_row(*args: Any, **kwargs: Any) -> None:
    return None


def _objs_rows(objs: Any = (), *args: Any, **kwargs: Any) -> list[Any]:
    return [obj.pk for obj in kwargs.get("objs", objs) if obj.pk is not None]


_hooks_lock = threading.Lock()


def install_queryset_hooks() -> None:
    """Wrap QuerySet.update/bulk_update/bulk_create once per process (over invalidation's)."""
    with _hooks_lock:
        if getattr(models.QuerySet.update, "tiercache_write_behind", False):
            return
        models.QuerySet.update = _wrap(models.QuerySet.update, _every_row)  # type: ignore[method-assign]
        models.QuerySet.bulk_update = _wrap(models.QuerySet.bulk_update, _objs_rows)  # type: ignore[method-assign]
        models.QuerySet.bulk_create = _wrap(models.QuerySet.bulk_create, _objs_rows)  # type: ignore[method-assign]


wiring.append((connect, disconnect))
