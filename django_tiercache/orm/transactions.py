"""Invalidation that respects database transactions.

A write to a registered model goes through two steps:

- ``before`` (pre_save, pre_delete, before a bulk query): the tags are *locked*
  on the cache: invalidated at once, and no process may cache anything under
  them until they are unlocked. So nothing read before the commit can be cached
  while the new data is not yet visible, and no reader is served the old value
  between the database commit and the invalidation.
- ``after`` (post_save, post_delete, after a bulk query): outside a transaction,
  the tags are unlocked (and invalidated again) at once. Inside one, the event
  is queued with ``transaction.on_commit`` (so that a rolled-back savepoint
  drops it), and one flush placed ahead of the project's own on_commit hooks
  unlocks and invalidates everything when the outermost transaction commits,
  then sends ``tags_invalidated``.

A rolled-back transaction runs no hooks: its locks are released (and its tags
invalidated, which costs a miss, never a stale read) the next time the same
thread writes, and expire by themselves after TIERCACHE["WRITE_LOCK_TIMEOUT"].
So is an autocommit write whose query raised. One that is still under way when
another starts (a save made in a pre_save receiver) is not abandoned: the inner
write joins it, and both are released once the outer one's query has run.
While a connection is inside a transaction that wrote a registered model, its
own cache fills tagged with that model are refused (see ``refuses_fill``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.db.models import Model

from .. import conf
from ..backend import tier_cache
from ..exceptions import InvalidationIncomplete
from ..signals import tags_invalidated
from ..storage.tags import family_of

_local = threading.local()


@dataclass
class Event:
    model: type
    tags: dict[str, set[str]]  # cache alias -> tags


@dataclass
class Writes:
    """One thread's writes through one database connection, not yet made good."""

    writer: str = field(default_factory=lambda: os.urandom(8).hex())
    locked: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    committed: list[Event] = field(default_factory=list)
    dirty_models: set[str] = field(default_factory=set)
    flush_hook: Any = None
    in_transaction: bool = False  # False: an autocommit write is under way
    unconfirmed: list[Any] = field(default_factory=list)  # locks sent, replies not read
    # Tags to lock, in a transaction, while a lock is unconfirmed: sent as one call
    # when the locks are next confirmed (before the commit), not one call each.
    deferred: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    confirm_hook: Any = None  # the execute wrapper that confirms them before the next query
    # Autocommit writes under way: more than one when a write starts inside
    # another's (a save in a pre_save receiver); the outermost one's frame.
    depth: int = 0
    span: tuple[int, Any] | None = None


def _writes(using: str, starting: bool = False) -> Writes:
    """This thread's state for `using`; a leftover from a failed write is released first."""
    states = getattr(_local, "writes", None)
    if states is None:
        states = _local.writes = {}
    state = states.get(using)
    if state is not None and _abandoned(state, using, starting):
        _release(state, using)
        state = None
    if state is None:
        state = states[using] = Writes()
    return state


def _abandoned(state: Writes, using: str, starting: bool) -> bool:
    connection = connections[using]
    if state.in_transaction:
        # Its transaction is over and the flush did not run: it rolled back.
        hooks = [entry[1] for entry in connection.run_on_commit]
        return not connection.in_atomic_block or state.flush_hook not in hooks
    # An autocommit write whose ``after`` never came: its query raised, unless
    # it is still under way, with this write starting inside it.
    return starting and bool(state.locked) and not _still_running(state.span)


# The frames a write runs in from its ``before`` to its ``after``: Model.save_base,
# and the wrapper of the bulk QuerySet methods (orm/invalidation.py adds it).
SPAN_CODES: set[Any] = {Model.save_base.__code__}
# How far above ``before`` its write's frame may be (signal dispatch in between).
SPAN_SEARCH = 12
STACK_SEARCH = 1000


def _span() -> Any:
    """The frame of the write that called ``before``, or None if not found."""
    frame: Any = sys._getframe(2)
    for _ in range(SPAN_SEARCH):
        if frame is None or frame.f_code in SPAN_CODES:
            return frame
        frame = frame.f_back
    return None


def _still_running(span: tuple[int, Any] | None) -> bool:
    """Is the write whose frame was `span` still under way, further up this stack?

    Looked for only when a write finds another's locks unreleased (rare): above
    the frame of the write starting now. A frame is known by its id and code;
    one that ended cannot be on the stack, and one whose id was reused by a live
    frame of the same code would only keep the locks until that frame's write ends.
    """
    if span is None:
        return False
    own = _span()
    frame = own.f_back if own is not None else None
    for _ in range(STACK_SEARCH):
        if frame is None:
            return False
        if id(frame) == span[0] and frame.f_code is span[1]:
            return True
        frame = frame.f_back
    return False


# Locks sent inside a transaction are confirmed after the query, before the
# commit; past this many outstanding (a large cascade), the oldest is awaited.
MAX_UNCONFIRMED = 8


def _lock(state: Writes, tags: dict[str, set[str]], wait: bool, defer: bool = False) -> None:
    """Lock the tags not locked yet; wait: confirm every lock sent. defer (in a
    transaction, where locks need only be confirmed before the commit): while a
    lock is unconfirmed, keep new tags for the next confirmation, which sends them
    in one call. Django's delete() sends every row's pre_delete before any query
    and the post_delete events after them all: a cascade of 100 rows then costs
    two lock calls, not 100."""
    for alias, alias_tags in tags.items():
        locked = state.locked[alias]
        new = {tag for tag in alias_tags - locked if family_of(tag) not in locked}
        if new and defer and state.unconfirmed:
            state.deferred[alias] |= new
        elif new:
            _send_lock(state, alias, new)
        # A "family:member" tag whose family this writer holds locked needs no lock
        # of its own: every entry under it is under the family too (entry_tags), so
        # the family's lock already invalidated them and keeps fills out. It is
        # released with the locks, which drops its token too. (A queryset's
        # delete() locks the model's family first: its rows' post_delete events
        # then cost no round trip each.)
        locked |= alias_tags
    if wait:
        _confirm(state)
    while len(state.unconfirmed) > MAX_UNCONFIRMED:
        state.unconfirmed.pop(0)()


def _send_lock(state: Writes, alias: str, tags: set[str]) -> None:
    seconds = conf.get_config()["WRITE_LOCK_TIMEOUT"]
    finish = tier_cache(alias).lock_tags(state.writer, tags, seconds, wait=False)
    state.unconfirmed.append(_outliving_checked(finish, seconds))


# A lock confirmed less than this long before it expires (a fence waited, a server
# was slow) could expire before the write's query commits: the write stops instead,
# before its query in autocommit (seconds; half WRITE_LOCK_TIMEOUT if that is less).
QUERY_ROOM = 1.0


def _outliving_checked(finish: Any, seconds: float) -> Any:
    sent = time.monotonic()

    def confirm() -> Any:
        result = finish()
        waited = time.monotonic() - sent
        if waited > seconds - min(QUERY_ROOM, seconds / 2):
            raise InvalidationIncomplete(
                f"the write locks took {waited:.1f} s to be confirmed, and last "
                f"TIERCACHE['WRITE_LOCK_TIMEOUT'] = {seconds:g} s: they could expire before "
                f"the write commits, so it stops here (its tags stay invalidated). Raise "
                f"WRITE_LOCK_TIMEOUT well above TAG_LEASE plus the socket timeouts "
                f"(tiercache.E015)."
            )
        return result

    return confirm


def _confirm(state: Writes) -> None:
    """Send the deferred locks, then wait for every lock sent."""
    for alias, tags in list(state.deferred.items()):
        del state.deferred[alias]
        _send_lock(state, alias, tags)
    while state.unconfirmed:
        state.unconfirmed.pop(0)()


def _confirm_before_next_query(state: Writes, using: str) -> None:
    """Wait for the locks just before the next SQL statement on `using` runs.

    In autocommit that statement commits as it runs, so the locks must be in
    place first; between the signal and the statement Django still builds and
    compiles the query, and the locks' round trip overlaps that work. The
    wrapper goes first in the list: it runs outermost (before the project's
    own wrappers see the query), and a ``with connection.execute_wrapper()``
    block, which pops the list's last entry when it ends, never pops it.
    """
    if state.confirm_hook is not None:
        return
    connection = connections[using]

    def confirm_then_execute(execute: Any, sql: Any, params: Any, many: Any, context: Any) -> Any:
        _stop_confirming(state, using)
        _confirm(state)
        return execute(sql, params, many, context)

    state.confirm_hook = confirm_then_execute
    connection.execute_wrappers.insert(0, confirm_then_execute)


def _stop_confirming(state: Writes, using: str) -> None:
    hook, state.confirm_hook = state.confirm_hook, None
    if hook is not None:
        wrappers = connections[using].execute_wrappers
        if hook in wrappers:
            wrappers.remove(hook)


def confirm_now(using: str) -> None:
    """In autocommit, wait for the locks ``before`` sent now (a statement about to run
    that no later hook would see first: raw_sql.py's)."""
    if connections[using].in_atomic_block:
        return  # confirmed in ``after``, before the commit
    state = _writes(using)
    _stop_confirming(state, using)
    _confirm(state)


def before(model: Any, tags: dict[str, set[str]], using: str) -> None:
    """A write to `model` touching `tags` is about to reach the database.

    In autocommit the query commits as it runs, so the lock must be in place
    first: it is sent now and awaited just before the query is (see
    ``_confirm_before_next_query``). In a transaction nobody sees the query
    before the commit: the lock is sent now and confirmed in ``after``, its
    round trip overlapping the query.
    """
    state = _writes(using, starting=True)
    in_transaction = connections[using].in_atomic_block
    if in_transaction:
        _ensure_flush(state, using)
    else:
        if state.depth == 0:
            frame = _span()
            state.span = None if frame is None else (id(frame), frame.f_code)
        state.depth += 1
    state.dirty_models.add(model._meta.label_lower)
    _lock(state, tags, wait=False, defer=in_transaction)
    if not in_transaction and state.unconfirmed:
        _confirm_before_next_query(state, using)


def after(model: Any, tags: dict[str, set[str]], using: str, paired: bool = True) -> None:
    """The write reached the database: invalidate now, or when the transaction commits.

    In autocommit, a write made inside another's (from a pre_save receiver) is
    made good with the outer one, whose locks must hold until its own query
    has run. An explicit invalidation there (not `paired` with a ``before``)
    is made at once, and leaves the outer write's state alone.
    """
    state = _writes(using)
    event = Event(model, tags)
    if not connections[using].in_atomic_block:
        if state.depth > 0 and not paired:
            _invalidate(event)
            return
        state.committed.append(event)
        state.depth = max(state.depth - 1, 0)
        if state.depth == 0:
            _flush(state, using)
        return
    _ensure_flush(state, using)
    _lock(state, tags, wait=True)  # confirms the locks sent before; new tags: a new row's pk
    _queue(state, event, using)


def _ensure_flush(state: Writes, using: str) -> None:
    """One flush per transaction, not tied to any savepoint (a rolled-back
    savepoint must drop its events, not the flush that makes the others
    good), ahead of the project's own on_commit hooks, which may read the cache."""
    connection = connections[using]
    state.in_transaction = True
    if state.flush_hook in [entry[1] for entry in connection.run_on_commit]:
        return
    state.flush_hook = lambda: _flush(state, using)
    transaction.on_commit(state.flush_hook, using=using)
    flush = connection.run_on_commit.pop()
    connection.run_on_commit.insert(0, (set(), *flush[1:]))


def _queue(state: Writes, event: Event, using: str) -> None:
    """Queue the event just ahead of the flush, under the current savepoints."""
    connection = connections[using]
    transaction.on_commit(lambda: state.committed.append(event), using=using)
    queued = connection.run_on_commit.pop()
    hooks = [entry[1] for entry in connection.run_on_commit]
    connection.run_on_commit.insert(hooks.index(state.flush_hook), queued)


def _flush(state: Writes, using: str) -> None:
    """Unlock and invalidate everything the writes touched; announce the committed ones."""
    _stop_confirming(state, using)
    _confirm(state)
    tags: dict[str, set[str]] = defaultdict(set)
    for alias, locked in state.locked.items():
        tags[alias] |= locked
    for event in state.committed:
        for alias, event_tags in event.tags.items():
            tags[alias] |= event_tags
    for alias, alias_tags in tags.items():
        cache, locked = tier_cache(alias), state.locked.get(alias, set())
        fresh = alias_tags - locked
        if fresh:
            # Not locked before the write (invalidate_now after raw SQL): this is
            # their only invalidation, so it is made, and fenced where missed,
            # before the caller goes on; a release sent without waiting could
            # still be on its way when the caller reads them again.
            cache.invalidate_tags(*fresh)
        if locked:
            # Invalidated when they were locked: the release needs no reply.
            cache.unlock_tags(state.writer, locked, wait=False)
    committed = state.committed
    _local.writes.pop(using, None)
    for event in committed:
        _announce(event)


def _release(state: Writes, using: str) -> None:
    _stop_confirming(state, using)
    _confirm(state)
    for alias, locked in state.locked.items():
        if locked:
            tier_cache(alias).unlock_tags(state.writer, locked, wait=False)


def _invalidate(event: Event) -> None:
    for alias, event_tags in event.tags.items():
        if event_tags:
            tier_cache(alias).invalidate_tags(*event_tags)
    _announce(event)


def _announce(event: Event) -> None:
    """Send tags_invalidated for an event whose tags were invalidated."""
    for alias, event_tags in event.tags.items():
        tags_invalidated.send(sender=event.model, tags=frozenset(event_tags), cache_alias=alias)


def invalidate_now(model: Any, tags: dict[str, set[str]], using: str | None = None) -> None:
    """An explicit invalidation (raw SQL, imports): as a write that already happened."""
    using = using or "default"
    after(model, tags, using, paired=False)


def refuses_fill(tags: Iterable[str]) -> bool:
    """Is this thread inside a transaction that wrote a model these tags belong to?"""
    states = getattr(_local, "writes", None)
    if not states:
        return False
    for using, state in states.items():
        if state.dirty_models and connections[using].in_atomic_block:
            if any(tag.split(":", 1)[0] in state.dirty_models for tag in tags):
                return True
    return False
