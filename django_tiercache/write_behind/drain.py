"""The drain: claimed rows reach the database in one transaction, with bulk statements.

A batch runs as follows (see the README, "Write-behind", for why each step):

1. claim up to BATCH_SIZE pending rows (scripts.CLAIM), each with its version,
   for CLAIM_TIMEOUT seconds; a row this site cannot apply (its signature does
   not check, its model is not a write-behind one, its pk or a value does not
   convert: journal._problem) is quarantined as a dead letter at once, and the
   rest go on;
2. in one transaction (on PostgreSQL with every constraint checked at once, so a
   deferred foreign key fails on its own row, not at COMMIT), take each row's
   advisory lock and lock the rows that exist (SELECT ... FOR UPDATE), then
   confirm the claims are still ours: a direct write that took a row meanwhile
   (mixed.py) wins it, and we leave it alone. The advisory lock orders writers
   of a row that does not exist yet, where FOR UPDATE locks nothing: a drain
   whose claim ran out meanwhile holds it until it commits, so the drain that
   claimed the newer version waits and lands after it;
3. write: one upsert per model for full saves, one bulk_update per model and
   field set for partial ones (a row that does not exist fails, as
   ``save(update_fields=...)`` does), one ``UPDATE ... SET f = f + n`` per row
   with increments (their versions recorded, landed.py), one delete per model;
   if that fails on a row, each row again in its own savepoint, so the good
   ones still land;
4. commit, then acknowledge by version: a row written again since stays pending
   with its newer state; get_object's entries the cache held for the written
   rows are put back from a read after the commit (refill.py). A failed row
   is retried with backoff, and after MAX_RETRIES becomes a dead letter. If
   the database is unreachable the rows go back unharmed and wait.

A worker killed anywhere in this loses nothing: before the commit the database
rolls back and the claim runs out; after it, the same state is written again
(values, so writing twice changes nothing; increments are skipped where the
database already records their version).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    router,
    transaction,
)
from django.db import models as db_models
from django.db.models import F

from . import increments, landed, refill, rows
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
    quarantined: int = 0


class MissingRow(DatabaseError):
    """An update of a row that is not in the database (Django's own words for it)."""


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
        if not claimed:
            break
        total.quarantined += len(claimed)
        claimed = quarantine_bad(journal, token, claimed)
        total.quarantined -= len(claimed)
        again = [item for item in claimed if item.row in failed_here]
        journal.release(token, again)
        claimed = [item for item in claimed if item.row not in failed_here]
        if not claimed:
            if again:
                break
            continue  # a batch of quarantined rows: the rows behind them are due too
        outcome = apply(journal, token, claimed, config)
        failed_here.update(row for row, _ in outcome.failures)
        total.written += outcome.written
        total.failed += outcome.failed
        total.failures += outcome.failures
        if outcome.unavailable is not None:
            total.unavailable = outcome.unavailable
            break
    return total


def quarantine_bad(journal: Journal, token: str, claimed: list[Claimed]) -> list[Claimed]:
    """The claimed rows this site can apply; each of the others becomes a dead letter."""
    good = []
    for item in claimed:
        if item.problem is None:
            good.append(item)
            continue
        logger.error("write-behind: row %r quarantined, never written: %s", item.row, item.problem)
        journal.quarantine(token, item)
    return good


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
            check_constraints_at_once(using)
            order_writers(items, using)
            _lock_rows(items, using)
            held = journal.confirm(token, items)
            return write_once(journal, [item for item in items if item.row in held], using)
    finally:
        applying.active = False


def write_once(
    journal: Journal, items: list[Claimed], using: str
) -> tuple[list[Claimed], list[tuple[Claimed, str]]]:
    """write_safely(), skipping increments the database already has (their versions
    recorded in this transaction, landed.py): those count as written."""
    counted = [item for item in items if increments.has_increments(item.fields)]
    if not counted:
        return write_safely(items, using)
    epoch = journal.epoch()
    done = landed.already_landed(using, epoch, counted)
    good, bad = write_safely([item for item in items if item.row not in done], using)
    landed.record(using, epoch, [i for i in good if increments.has_increments(i.fields)])
    return good + [item for item in items if item.row in done], bad


def check_constraints_at_once(using: str) -> None:
    """PostgreSQL: deferred constraints (Django's foreign keys) checked per statement, so
    that a bad row fails in its own savepoint and not the whole batch at COMMIT."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def order_writers(items: Iterable[Claimed], using: str) -> None:
    """PostgreSQL: each row's transaction-scoped advisory lock, in one order (no deadlock
    between two drains). Taken by direct writers of a row with pending state too (mixed.py)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    keys = sorted({lock_key(item.row) for item in items})
    if not keys:
        return
    with connection.cursor() as cursor:  # one statement, taken in the sorted order
        cursor.execute(
            "SELECT pg_advisory_xact_lock(k) FROM "
            "(SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS sorted_keys",
            [keys],
        )


def lock_key(row: str) -> int:
    digest = hashlib.blake2b(row.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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
    """The claimed states as bulk statements: upserts, bulk updates, increments, deletes."""
    by_model: dict[type[db_models.Model], list[tuple[Any, Claimed, rows.Decoded]]]
    by_model = defaultdict(list)
    for item in items:
        model, pk = rows.parse_row(item.row)
        by_model[model].append((pk, item, rows.decode(model, item.row, item.fields)))
    for model, group in by_model.items():
        manager = model._base_manager.using(using)
        saves = [(pk, d) for pk, i, d in group if i.op == "save"]
        if saves:
            _upsert(model, manager, [rows.build(model, pk, d.values, using) for pk, d in saves])
        updates: dict[tuple[str, ...], list[db_models.Model]] = defaultdict(list)
        for pk, item, decoded in group:
            if item.op == "update" and not decoded.deltas:
                updates[tuple(sorted(decoded.values))].append(
                    rows.build(model, pk, decoded.values, using)
                )
        for names, objs in updates.items():
            _update_existing(model, manager, objs, names)
        for pk, item, decoded in group:
            if decoded.deltas and item.op in ("save", "update"):
                _increment(model, manager, pk, decoded, item.op)
        deleted = [pk for pk, item, _ in group if item.op == "delete"]
        if deleted:
            manager.filter(pk__in=deleted).delete()


def _update_existing(
    model: type[db_models.Model], manager: Any, objs: list[db_models.Model], names: tuple
) -> None:
    """bulk_update, refusing rows that do not exist (it would skip them silently)."""
    pks = [obj.pk for obj in objs]
    existing = set(manager.filter(pk__in=pks).values_list("pk", flat=True))
    missing = [pk for pk in pks if pk not in existing]
    if missing:
        raise MissingRow(
            f"Save with update_fields did not affect any rows ({model._meta.label} pk "
            f"{missing[0]!r} does not exist)."
        )
    manager.bulk_update(objs, [_name(model, n) for n in names])


def _increment(
    model: type[db_models.Model], manager: Any, pk: Any, decoded: rows.Decoded, op: str
) -> None:
    """One UPDATE ... SET f = f + n (and the row's other pending values)."""
    values = {_name(model, n): v for n, v in decoded.values.items()}
    if op == "save":
        values = {}  # the upsert above wrote them (a retried dead save under increments)
    changes = {_name(model, n): F(_name(model, n)) + d for n, d in decoded.deltas.items()}
    if not manager.filter(pk=pk).update(**values, **changes):
        raise MissingRow(
            f"Save with update_fields did not affect any rows ({model._meta.label} pk "
            f"{pk!r} does not exist)."
        )


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
