"""The drain: claimed rows reach the database in one transaction, with bulk statements.

A batch runs as follows (see the README, "Write-behind", for why each step):

1. claim up to BATCH_SIZE pending rows (scripts.CLAIM), each with its version,
   for CLAIM_TIMEOUT seconds;
2. in one transaction, lock the rows that exist (SELECT ... FOR UPDATE), then
   confirm the claims are still ours: a direct write that took a row meanwhile
   (mixed.py) wins it, and we leave it alone;
3. write: one upsert per model for full saves, one bulk_update per model and
   field set for partial ones, one delete per model; if that fails on a row,
   each row again in its own savepoint, so the good ones still land;
4. commit, then acknowledge by version: a row written again since stays pending
   with its newer state; get_object's entries the cache held for the written
   rows are put back from a read after the commit (refill.py). A failed row
   is retried with backoff, and after MAX_RETRIES becomes a dead letter. If
   the database is unreachable the rows go back unharmed and wait.

A worker killed anywhere in this loses nothing: before the commit the database
rolls back and the claim runs out; after it, the same state is written again
(values, not increments, so writing twice changes nothing).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, InterfaceError, OperationalError, router, transaction
from django.db import models as db_models

from . import refill, rows
from . import settings as wb_settings
from .journal import Claimed, Journal, get_journal
from .server import NotReplicated

logger = logging.getLogger("django_tiercache.write_behind")

# The database itself failed: no row is to blame, and none is charged an attempt.
UNAVAILABLE = (OperationalError, InterfaceError)
ROW_ERRORS = (DatabaseError, ValidationError, ValueError, TypeError, LookupError)

# Set while this thread writes claimed rows: mixed.py's hooks stand aside.
applying = threading.local()


@dataclass
class Outcome:
    written: int = 0
    failed: int = 0
    unavailable: BaseException | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)


def drain(timeout: float | None = None, journal: Journal | None = None) -> Outcome:
    """Drain batches until nothing is due, `timeout` seconds pass, or the database fails."""
    journal = journal or get_journal()
    config = wb_settings.get()
    deadline = None if timeout is None else time.monotonic() + timeout
    total = Outcome()
    failed_here: set[str] = set()  # one attempt per row per drain, whatever the backoff
    while deadline is None or time.monotonic() < deadline:
        token = uuid.uuid4().hex
        claimed = journal.claim(token, config["BATCH_SIZE"], config["CLAIM_TIMEOUT"])
        again = [item for item in claimed if item.row in failed_here]
        journal.release(token, again)
        claimed = [item for item in claimed if item.row not in failed_here]
        if not claimed:
            break
        outcome = apply(journal, token, claimed, config)
        failed_here.update(row for row, _ in outcome.failures)
        total.written += outcome.written
        total.failed += outcome.failed
        total.failures += outcome.failures
        if outcome.unavailable is not None:
            total.unavailable = outcome.unavailable
            break
    return total


def apply(journal: Journal, token: str, claimed: list[Claimed], config: dict) -> Outcome:
    """Write claimed rows (one transaction per database), then acknowledge or fail them."""
    outcome = Outcome()
    for using, items in _by_database(claimed).items():
        cached = refill.held(item.row for item in items)
        try:
            good, bad = _write_batch(journal, token, items, using)
        except UNAVAILABLE as exc:
            logger.warning("write-behind drain: database %r unavailable (%s)", using, exc)
            journal.release(token, items, delay_seconds=config["RETRY_BACKOFF"])
            journal.count("db_unavailable")
            outcome.unavailable = exc
            continue
        outcome.written += _acknowledge(journal, token, good, outcome)
        refill.put_back(cached, (item.row for item in good))
        for item, error in bad:
            journal.fail(token, item, error, config["RETRY_BACKOFF"], config["MAX_RETRIES"])
            outcome.failures.append((item.row, error))
        outcome.failed += len(bad)
    return outcome


def _acknowledge(journal: Journal, token: str, good: list[Claimed], outcome: Outcome) -> int:
    """ACK the written rows, waiting for REPLICAS replicas to confirm it.

    An ACK a failover loses puts rows back to pending on the promoted replica, and
    a later drain writes the same states again: harmless by itself (values, not
    increments), but a direct write that read the journal after the ACK and
    committed before the failover would be overwritten by the older state. WAIT
    cannot undo that (the database has committed); what it can do is stop the
    drain when no replica confirms, as if the journal were unreachable, so that at
    most one batch's ACKs stand unconfirmed (the next drain tries again). Claims
    are not waited for: a lost claim lets another drain write the same state, and
    confirm() inside the transaction keeps the two apart.
    """
    try:
        return journal.ack(token, good, replicated=True)
    except NotReplicated as exc:
        logger.error("write-behind drain: %s; stopping this drain", exc)
        outcome.unavailable = exc
        return int(exc.reply)


def _by_database(claimed: Iterable[Claimed]) -> dict[str, list[Claimed]]:
    groups: dict[str, list[Claimed]] = defaultdict(list)
    for item in claimed:
        model, _ = rows.parse_row(item.row)
        groups[router.db_for_write(model)].append(item)
    return groups


def _write_batch(
    journal: Journal, token: str, items: list[Claimed], using: str
) -> tuple[list[Claimed], list[tuple[Claimed, str]]]:
    applying.active = True
    try:
        with transaction.atomic(using=using):
            _lock_rows(items, using)
            held = journal.confirm(token, items)
            return write_safely([item for item in items if item.row in held], using)
    finally:
        applying.active = False


def write_safely(
    items: list[Claimed], using: str
) -> tuple[list[Claimed], list[tuple[Claimed, str]]]:
    """(written, [(failed, error)]): all in one go, else row by row in savepoints."""
    try:
        with transaction.atomic(using=using):
            write(items, using)
        return items, []
    except UNAVAILABLE:
        raise
    except ROW_ERRORS:
        return _one_by_one(items, using)


def _one_by_one(
    items: list[Claimed], using: str
) -> tuple[list[Claimed], list[tuple[Claimed, str]]]:
    good, bad = [], []
    for item in items:
        try:
            with transaction.atomic(using=using):
                write([item], using)
            good.append(item)
        except UNAVAILABLE:
            raise
        except ROW_ERRORS as exc:
            bad.append((item, f"{type(exc).__name__}: {exc}"[:500]))
    return good, bad


def _lock_rows(items: list[Claimed], using: str) -> None:
    """Lock the existing rows, so no direct write slips between confirm and write."""
    for model, pks in _pks_by_model(items).items():
        list(
            model._base_manager.using(using)
            .select_for_update()
            .filter(pk__in=pks)
            .order_by("pk")
            .values_list("pk", flat=True)
        )


def _pks_by_model(items: Iterable[Claimed]) -> dict[type[db_models.Model], list[Any]]:
    found: dict[type[db_models.Model], list[Any]] = defaultdict(list)
    for item in items:
        model, pk = rows.parse_row(item.row)
        found[model].append(pk)
    return found


def write(items: list[Claimed], using: str) -> None:
    """The claimed states as bulk statements: upserts, bulk updates, deletes."""
    by_model: dict[type[db_models.Model], list[tuple[Any, Claimed]]] = defaultdict(list)
    for item in items:
        model, pk = rows.parse_row(item.row)
        by_model[model].append((pk, item))
    for model, group in by_model.items():
        manager = model._base_manager.using(using)
        saves = [rows.build(model, pk, i.fields, using) for pk, i in group if i.op == "save"]
        if saves:
            _upsert(model, manager, saves)
        updates: dict[tuple[str, ...], list[db_models.Model]] = defaultdict(list)
        for pk, item in group:
            if item.op == "update":
                updates[tuple(sorted(item.fields))].append(
                    rows.build(model, pk, item.fields, using)
                )
        for names, objs in updates.items():
            manager.bulk_update(objs, [_name(model, n) for n in names])
        deleted = [pk for pk, item in group if item.op == "delete"]
        if deleted:
            manager.filter(pk__in=deleted).delete()


def _upsert(model: type[db_models.Model], manager: Any, objs: list[db_models.Model]) -> None:
    fields = [f.name for f in rows.concrete_fields(model)]
    if not fields:
        manager.bulk_create(objs, ignore_conflicts=True)
        return
    manager.bulk_create(
        objs, update_conflicts=True, unique_fields=[model._meta.pk.name], update_fields=fields
    )


def _name(model: type[db_models.Model], attname: str) -> str:
    return next(f.name for f in model._meta.concrete_fields if f.attname == attname)
