"""L1: an in-process tier in front of the Redis partitions.

Each process keeps copies of entries it read from Redis, for at most the L1
``TIMEOUT`` (and never past the entry's own expiry, nor, for a tagged entry of
a multi-partition cache, past the lease its partition held when it was read).
A copy is dropped as soon as its partition announces a change that could make
it wrong (see storage/coherence.py and stores/lua.py): a key written or
deleted, a tag dropped, locked or unlocked, the generation dropped.

Copies are kept per partition *slot*. A slot serves only while its channel
subscription is live; when the subscription drops, its copies are flushed and
the slot is bypassed until it is back, since changes announced meanwhile were
not heard. A live slot also serves only while it is known to be at most
``MAX_LAG`` seconds behind the server its subscriber listens to: the subscriber
pings that server, and a reply proves that every message it published before
the ping was sent has been applied (they travel ahead of it on one connection).
While the last such proof is older than MAX_LAG, its copies are kept but not
served. (It proves nothing about another server: a Cluster slot mid-migration,
where stores/cluster.py announces on the source first and keeps nothing read
from the importing master.) Nor are they served, with MAX_LAG set, while a
message has reached this process but is not yet applied (still on the
subscriber's socket, or read off it and not yet applied): the subscriber thread
may wait milliseconds for the GIL or a CPU while a request thread runs, and the
request must not be served what that message invalidates. The request first
waits up to ``coherence.CATCH_UP`` for the subscriber to apply it (blocked, so
the subscriber gets the GIL) and asks again; only if it is still pending does
the read go to Redis.

Every change a slot hears is numbered; a read from Redis takes the number
first (its *ticket*) and may fill L1 only if no change to its key or tags was
heard since: an entry read just before an invalidation, whose
message arrives before the copy is stored, is never stored.

A hit returns a value of its own: mutable values are kept as the verified,
serialized bytes and decoded on each hit (faster than deep-copying them, see
benchmarks/bench_l1.py); immutable ones (str, bytes, int, float, bool, None)
are kept as they are.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from .admission import WTinyLFU

MISS = object()
IMMUTABLE = frozenset({str, bytes, int, float, bool, type(None)})
# Changes remembered per slot for the fills still in flight; a fill whose
# ticket is older than the oldest of them is dropped.
CHANGE_LOG = 256
ENTRY_OVERHEAD = 200  # bytes an entry costs besides its key and data, roughly

_all: weakref.WeakSet[L1] = weakref.WeakSet()


class Copy:
    """What L1 holds for one key."""

    __slots__ = ("value", "data", "tags", "expires", "slot", "gone")

    def __init__(self, value: Any, data: bytes | None, tags: tuple, expires: float, slot: Slot):
        self.value, self.data, self.tags, self.expires, self.slot = (
            value,
            data,
            tags,
            expires,
            slot,
        )
        self.gone = False  # dropped from L1 (a hit that looked it up first must not serve it)


def _settled() -> bool:
    return True


class Slot:
    """One partition as L1 sees it: is its channel live, and what changed lately."""

    __slots__ = ("index", "live", "heard", "seq", "log", "keys", "settled", "catch_up")

    def __init__(self, index: int):
        self.index = index
        self.live = False
        # monotonic() when the last ping was sent whose reply came back: every
        # change published before then has been applied to this slot.
        self.heard = 0.0
        self.seq = 0
        self.log: deque[tuple[int, str, frozenset]] = deque(maxlen=CHANGE_LOG)
        self.keys: set[str] = set()
        # Has everything that reached this process on the slot's channel been
        # applied? (its subscriber answers: coherence.Subscriber.settled)
        self.settled: Callable[[], bool] = _settled
        # settled() asked again once the subscriber had a moment to apply what
        # is pending (coherence.Subscriber.catch_up).
        self.catch_up: Callable[[], bool] = _settled

    def changed_since(self, ticket: int, key: str, tags: tuple) -> bool:
        """Was a change to key or tags heard after `ticket`?"""
        if self.seq == ticket:
            return False
        if not self.log or self.log[0][0] > ticket + 1:
            return True  # the changes since then are no longer all remembered
        for seq, kind, items in reversed(self.log):
            if seq <= ticket:
                break
            if kind == "*" or (kind == "k" and key in items):
                return True
            if kind == "t" and not items.isdisjoint(tags):
                return True
        return False


class L1:
    """The copies one cache keeps in this process, shared by all its threads."""

    def __init__(
        self,
        partitions: int,
        max_entries: int,
        max_bytes: int,
        timeout: float,
        loads: Callable[[bytes], Any],
        max_lag: float | None = None,
    ):
        self.timeout = timeout
        # None: copies are served whatever the subscriber's delay.
        self.max_lag = max_lag
        self.loads = loads
        self.lock = threading.Lock()
        self.entries = WTinyLFU(max_entries, max_bytes)
        self.slots = [Slot(i) for i in range(partitions)]
        # Told (slot, seconds) when a slot's channel proved late by more than
        # max_lag: its copies were not served meanwhile (the cache counts it).
        self.on_behind: Callable[[int, float], None] | None = None
        self.on_malformed: Callable[[int, bytes], None] | None = None
        self.malformed_messages = 0
        self.tag_keys: dict[str, set[str]] = {}
        self.listening_pid = 0  # subscriptions are per process (see coherence.listen)
        _all.add(self)

    # -- reads --

    def get(self, key: str) -> Any:
        """The value of key's copy, or MISS."""
        now = monotonic()
        with self.lock:
            copy = self.entries.get(key)
            if copy is None:
                return MISS
            if copy.expires <= now or not copy.slot.live:
                self._remove(key, copy)
                return MISS
            if self.max_lag is not None and now - copy.slot.heard > self.max_lag:
                return MISS  # kept: the messages it waits for will drop it or not
        if self.max_lag is not None:
            # A change that already reached this process but is not applied yet
            # (its subscriber thread waits for the GIL or a CPU) must not be
            # hidden by the copy: asked outside the lock, which the subscriber
            # needs to apply it; a copy dropped meanwhile is not served. Most
            # often the thread only needs the GIL: catch_up() hands it over and
            # asks again, which costs less than the Redis read it spares.
            slot = copy.slot
            if not slot.settled() and not slot.catch_up():
                return MISS
            if copy.gone:
                return MISS
        return copy.value if copy.data is None else self.loads(copy.data)

    def ticket(self, slot: int) -> int | None:
        """The slot's change number before a Redis read; None: do not fill from it."""
        s = self.slots[slot]
        return s.seq if s.live else None

    def fill(
        self,
        key: str,
        slot: int,
        ticket: int | None,
        value: Any,
        data: bytes | None,
        tags: tuple,
        expires: float,
    ) -> bool:
        """Keep a copy read from Redis, unless a change to it was heard since `ticket`."""
        if ticket is None:
            return False
        if type(value) in IMMUTABLE:
            data, size = None, sys.getsizeof(value)
        elif data is None:
            return False
        else:
            size = len(data)
        with self.lock:
            s = self.slots[slot]
            if not s.live or s.changed_since(ticket, key, tags):
                return False
            old = self.entries.pop(key)
            if old is not None:
                self._unindex(key, old)
            copy = Copy(value if data is None else None, data, tags, expires, s)
            s.keys.add(key)
            for tag in tags:
                self.tag_keys.setdefault(tag, set()).add(key)
            size += len(key) + ENTRY_OVERHEAD
            for evicted_key, evicted in self.entries.put(key, copy, size):
                self._unindex(str(evicted_key), evicted)
        return True

    # -- changes --

    def changed(self, slot: int, kind: str, items: Iterable[str] = ()) -> None:
        """A change on the slot's partition: "k" keys, "t" tags, "*" everything."""
        with self.lock:
            s = self.slots[slot]
            s.seq += 1
            s.log.append((s.seq, kind, frozenset(items)))
            if kind == "*":
                self._flush(s)
            elif kind == "k":
                self._drop(s, items)
            elif kind == "t":
                for tag in items:
                    self._drop(s, list(self.tag_keys.get(tag, ())))

    def connected(self, slot: int, since: float = 0.0) -> None:
        """The slot's channel is (again) subscribed, by a request sent at `since`
        (monotonic): changes are heard from then on."""
        self.changed(slot, "*")
        self.slots[slot].heard = since
        self.slots[slot].live = True

    def heard(self, slot: int, until: float) -> None:
        """Every change published before `until` (monotonic) has been applied."""
        s = self.slots[slot]
        if until > s.heard:
            s.heard = until

    def fell_behind(self, slot: int, seconds: float) -> None:
        """The slot went `seconds` without proof that it had heard every change."""
        if self.max_lag is not None and seconds > self.max_lag and self.on_behind is not None:
            self.on_behind(slot, seconds)

    def malformed(self, slot: int, data: bytes) -> None:
        """The slot's channel carried a message this app never publishes: ignored."""
        self.malformed_messages += 1
        if self.on_malformed is not None:
            self.on_malformed(slot, data)

    def lost(self, slot: int) -> None:
        """The slot's channel dropped: forget its copies, bypass it until it is back."""
        self.slots[slot].live = False
        self.changed(slot, "*")

    def clear(self) -> None:
        for slot in self.slots:
            self.changed(slot.index, "*")

    # -- inside the lock --

    def _drop(self, slot: Slot, keys: Iterable[str]) -> None:
        for key in keys:
            copy = self.entries.peek(key)
            if copy is not None and copy.slot is slot:  # tags are per partition
                self._remove(key, copy)

    def _flush(self, slot: Slot) -> None:
        for key in list(slot.keys):
            copy = self.entries.pop(key)
            if copy is not None:
                self._unindex(key, copy)
        slot.keys.clear()

    def _remove(self, key: str, copy: Copy) -> None:
        self.entries.pop(key)
        self._unindex(key, copy)

    def _unindex(self, key: str, copy: Copy) -> None:
        copy.gone = True
        copy.slot.keys.discard(key)
        for tag in copy.tags:
            keys = self.tag_keys.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.tag_keys[tag]


def forget_all() -> None:
    """After a fork: the parent's subscriptions are not the child's."""
    for l1 in list(_all):
        l1.lock = threading.Lock()  # a thread that held it is gone
        for slot in l1.slots:
            l1.lost(slot.index)
        l1.listening_pid = 0
