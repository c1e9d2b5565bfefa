"""An in-process partition (``memory://name``) with the same semantics as Redis.

It mirrors the Lua functions of stores/lua.py operation for operation (tags,
tokens, generation, the meta record with locks, fences, grants and epochs,
leases, TTLs), so that the example project and development servers behave
like production without a Redis server. Spaces are shared by every thread of a
process, like Django's locmem cache; least recently used entries are culled
past OPTIONS["MEMORY_MAX_ENTRIES"] (the meta record too: its loss is handled
as on Redis). Time is the monotonic clock, so a wall clock that jumps changes
nothing here.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from redis.exceptions import ResponseError

from .base import (
    DROP_AND_QUIET,
    NO_LEASE,
    NO_TAGGED,
    QUIET,
    UNVERIFIED,
    Done,
    Store,
    Write,
)
from .slots import BUCKET_FIELDS, BUCKETS, GEN_KEY, slot_of
from .structures import WRONGTYPE, MemoryStructures, Structure

_spaces: dict[str, _Space] = {}
_spaces_lock = threading.Lock()


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class _Space:
    """A dict with Redis-like expiry (absolute wall-clock milliseconds) and LRU culling."""

    def __init__(self, max_entries: int):
        self.data: OrderedDict[str, tuple[Any, int | None]] = OrderedDict()
        self.lock = threading.RLock()
        self.max_entries = max_entries
        self.metas_made: set[str] = set()  # namespaces whose meta record was ever made

    def get(self, key: str) -> Any:
        item = self.data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now_ms():
            del self.data[key]
            return None
        self.data.move_to_end(key)
        return item[0]

    def set(
        self,
        key: str,
        value: Any,
        ttl_ms: int | None = None,
        *,
        at_ms: int | None = None,
        keep_ttl: bool = False,
    ) -> None:
        if keep_ttl and key in self.data:
            at_ms = self.data[key][1]
        elif ttl_ms is not None:
            at_ms = now_ms() + ttl_ms
        self.data[key] = (value, at_ms)
        self.data.move_to_end(key)
        if len(self.data) > self.max_entries:
            self._cull()

    def pttl(self, key: str) -> int:
        if self.get(key) is None:
            return -2
        at = self.data[key][1]
        return -1 if at is None else at - now_ms()

    def expire(self, key: str, ttl_ms: int | None) -> None:
        if self.get(key) is not None:
            self.set(key, self.data[key][0], ttl_ms)

    def delete(self, key: str) -> bool:
        return self.get(key) is not None and self.data.pop(key, None) is not None

    def _cull(self) -> None:
        now = now_ms()
        for key in [k for k, (_, at) in self.data.items() if at is not None and at <= now]:
            del self.data[key]
        while len(self.data) > self.max_entries * 9 // 10:
            self.data.popitem(last=False)


class _Tagged:
    """A tagged entry: its generation, (slot, token) per tag, and its body."""

    __slots__ = ("gen", "tokens", "body")

    def __init__(self, gen: str, tokens: tuple[tuple[int, str], ...], body: bytes):
        self.gen, self.tokens, self.body = gen, tokens, body


class _Meta:
    """What stores/lua.py keeps in the ``meta`` hash."""

    def __init__(self, epoch: str, quiet_until: int):
        self.epoch, self.quiet_until = epoch, quiet_until
        self.born = now_ms()
        self.locks: dict[str, dict[str, int]] = {}  # str(slot) -> {writer: until}
        self.fences: dict[str, int] = {}
        self.grants: dict[str, int] = {}
        self.vouched: dict[str, str] = {}
        self.fence_quiet_until = 0  # the quiet period comes from a fence until then
        self.adopted_until = 0  # a fence recorded until then ends the quiet again
        self.copies: dict[str, tuple[int, str]] = {}  # id -> (until, epoch)
        self.tok = 0  # the counter tag tokens are drawn from


class MemoryStore(Store):
    native_async = True  # nothing to wait for

    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        super().__init__(url, ns, options)
        name = urlsplit(url).netloc + urlsplit(url).path
        with _spaces_lock:
            self.space = _spaces.setdefault(name, _Space(options["MEMORY_MAX_ENTRIES"]))

    # -- the helpers of the Lua library --

    def _body(self, value: Any) -> bytes | None:
        if not isinstance(value, _Tagged):
            return None if isinstance(value, Structure) else value
        s = self.space
        if s.get(self.ns + GEN_KEY) != value.gen:
            return None
        if any(self._slot_token(slot) != tok for slot, tok in value.tokens):
            return None
        return value.body

    def _bucket(self, slot: int) -> str:
        return f"{self.ns}s:{slot // BUCKET_FIELDS}"

    def _slot_token(self, slot: int) -> str | None:
        bucket = self.space.get(self._bucket(slot))
        return None if bucket is None else bucket.get(slot % BUCKET_FIELDS)

    def _token(self, slot: int) -> str:
        """The slot's token, drawn from the meta record's counter if missing."""
        tok = self._slot_token(slot)
        if tok is not None:
            return tok
        meta = self._meta()[0]
        meta.tok += 1
        tok = str(meta.tok)
        key = self._bucket(slot)
        bucket = self.space.get(key)
        if bucket is None:
            bucket = {}
            self.space.set(key, bucket)
        bucket[slot % BUCKET_FIELDS] = tok
        return tok

    def _generation(self, fresh: str) -> str:
        gen = self.space.get(self.ns + GEN_KEY)
        if gen is None:
            gen = fresh
            self.space.set(self.ns + GEN_KEY, gen)
        return gen

    def _drop_slots(self, tags: Any) -> int:
        dropped = 0
        for tag in tags:
            slot = slot_of(tag)
            bucket = self.space.get(self._bucket(slot))
            if bucket is not None and bucket.pop(slot % BUCKET_FIELDS, None) is not None:
                dropped += 1
        return dropped

    def _meta(self) -> tuple[_Meta, bool]:
        """The meta record, started over if it was lost; and whether it was there."""
        meta = self.space.get(self.ns + "meta")
        if meta is not None:
            return meta, True
        for key in (GEN_KEY, "lease"):
            self.space.delete(self.ns + key)
        # The token counter starts over: so does the slot table (see lua.py new_meta).
        for bucket in range(BUCKETS):
            self.space.data.pop(f"{self.ns}s:{bucket}", None)
        # Locks live in this process too: only a record culled after it was made
        # (not one made for the first time) can have taken locks with it.
        horizon = self.horizon if self.ns in self.space.metas_made else 0
        self.space.metas_made.add(self.ns)
        meta = _Meta(os.urandom(8).hex(), now_ms() + horizon if horizon else 0)
        self.space.set(self.ns + "meta", meta)
        return meta, False

    def _fills_allowed(self) -> bool:
        return self._meta()[0].quiet_until <= now_ms()

    def _tag_token(self, tag: str) -> str:
        """The tag's token, or "!" (matching nothing) while a writer holds its slot locked."""
        slot = slot_of(tag)
        writers = self._meta()[0].locks.get(str(slot))
        if writers:
            now = now_ms()
            for writer in [w for w, until in writers.items() if until <= now]:
                del writers[writer]
            if writers:
                return "!"
        return self._token(slot)

    # -- operations --

    def read(self, keys, leased):
        with self.space.lock:
            lease, values = NO_TAGGED, []
            for key in keys:
                value = self.space.get(key)
                if isinstance(value, _Tagged):
                    if leased and lease == NO_TAGGED:
                        lease = self.space.pttl(self.ns + "lease")
                    value = self._body(value) if not leased or lease > 0 else UNVERIFIED
                values.append(value)
            return Done((lease, values))

    def _leased(self, leased: bool) -> bool:
        return not leased or self.space.pttl(self.ns + "lease") > 0

    def write(self, writes: list[Write], nx, fresh, leased=False):
        with self.space.lock:
            return Done([self._write(w, nx, fresh, leased) for w in writes])

    def _write(self, w: Write, nx: bool, fresh: str, leased: bool) -> int:
        if nx and self._body(self.space.get(w.key)) is not None:
            return False
        value: Any = w.body
        if w.tags:
            if not self._leased(leased):
                return NO_LEASE
            if not self._fills_allowed():
                return QUIET
            current = (self._generation(fresh), *(self._tag_token(tag) for tag in w.tags))
            if "!" in current or (w.snapshot is not None and tuple(w.snapshot) != current):
                return False
            slots = (slot_of(tag) for tag in w.tags)
            value = _Tagged(current[0], tuple(zip(slots, current[1:], strict=True)), w.body)
        self.space.set(w.key, value, w.ttl_ms)
        return True

    def delete(self, keys):
        with self.space.lock:
            return Done(sum(self.space.delete(key) for key in keys))

    def claim(self, names, owner, ttl_ms):
        held = []
        with self.space.lock:
            for name in names:
                key = f"{self.ns}sf:{name}"
                holder = self.space.get(key)
                if holder is not None and holder != owner:
                    held.append(False)
                    continue
                self.space.set(key, owner, ttl_ms)  # taken, or renewed by its holder
                held.append(True)
        return Done(held)

    def release(self, names, owner):
        with self.space.lock:
            for name in names:
                key = f"{self.ns}sf:{name}"
                if self.space.get(key) == owner:
                    self.space.delete(key)
        return Done(True)

    def touch(self, key, ttl_ms):
        with self.space.lock:
            value = self.space.get(key)
            if isinstance(value, Structure):
                return Done(error=ResponseError(WRONGTYPE))
            if value is None or self._body(value) is None:
                return Done(False)
            if ttl_ms == 0:
                self.space.delete(key)
                return Done(True)
            self.space.expire(key, ttl_ms)
            return Done(True)

    def incr(self, key, delta):
        with self.space.lock:
            value = self.space.get(key)
            body = None if value is None else self._body(value)
            if body is None:
                return Done(None)
            if not body.lstrip(b"-").isdigit():
                return Done(error=TypeError(f"The value of {key!r} is not an integer."))
            total = int(body) + delta
            if isinstance(value, _Tagged):
                value.body = b"%d" % total
            else:
                self.space.set(key, b"%d" % total, keep_ttl=True)
            return Done(total)

    def entry(self, key):
        with self.space.lock:
            value = self.space.get(key)
            if isinstance(value, Structure):
                return Done(error=ResponseError(WRONGTYPE))
            body = None if value is None else self._body(value)
            if body is None:
                return Done(None)
            # The slots, named "#<slot>" (stores/slots.py): no tag name is kept.
            tags = tuple(f"#{slot}" for slot, _ in getattr(value, "tokens", ()))
            return Done((body, self.space.pttl(key), tags))

    def snapshot(self, tags, ttl_ms, fresh, leased=False):
        with self.space.lock:
            if not self._leased(leased):
                return Done(None)
            allowed = self._fills_allowed()
            return Done(
                (
                    self._generation(fresh),
                    *(self._tag_token(tag) if allowed else "!" for tag in tags),
                )
            )

    def drop_tags(self, tags):
        with self.space.lock:
            return Done(self._drop_slots(tags))

    def lock(self, tags, writer, lock_ms):
        with self.space.lock:
            meta, now = self._meta()[0], now_ms()
            for tag in tags:
                meta.locks.setdefault(str(slot_of(tag)), {})[writer] = now + lock_ms
            self._drop_slots(tags)
            copies = {id_: epoch for id_, (until, epoch) in meta.copies.items() if until > now}
            return Done((meta.epoch, copies))

    def unlock(self, tags, writer):
        with self.space.lock:
            meta = self.space.get(self.ns + "meta")
            for tag in tags:
                if meta is not None:
                    meta.locks.get(str(slot_of(tag)), {}).pop(writer, None)
            self._drop_slots(tags)
            return Done(1)

    def record_fence(self, ids, lease_ms):
        with self.space.lock:
            meta = self._meta()[0]
            now, left = now_ms(), []
            if meta.adopted_until > now:  # see record_fence in stores/lua.py
                self.space.delete(self.ns + GEN_KEY)
                if self.horizon:
                    meta.quiet_until = meta.fence_quiet_until = now + self.horizon
            for id_ in ids:
                meta.fences[id_] = meta.fences.get(id_, 0) + 1
                left.append(max(0, meta.grants.get(id_, 0) - now, meta.born + lease_ms - now))
            return Done(left)

    def check_fence(self, id_, lease_ms):
        with self.space.lock:
            meta = self._meta()[0]
            meta.grants[id_] = max(meta.grants.get(id_, 0), now_ms() + lease_ms)
            return Done((meta.fences.get(id_, 0), meta.epoch))

    def lease_prepare(self, nonce, lease_ms, peer_ids):
        with self.space.lock:
            meta = self._meta()[0]
            self.space.set(f"{self.ns}lease:{nonce}", 1, lease_ms)
            now = now_ms()
            lendable = meta.quiet_until > now and meta.fence_quiet_until <= now
            return Done((meta.epoch, lendable, [meta.vouched.get(id_) for id_ in peer_ids]))

    def lend_locks(self, id_, epoch):
        with self.space.lock:
            meta, now = self._meta()[0], now_ms()
            meta.copies[id_] = (now + self.horizon, epoch)
            locks = {}
            for tag, writers in meta.locks.items():
                held = [(until - now, writer) for writer, until in writers.items() if until > now]
                if held:
                    locks[tag] = held
            return Done((meta.quiet_until > now, locks))

    def adopt_locks(self, epoch, locks, margin_ms):
        with self.space.lock:
            meta, now = self.space.get(self.ns + "meta"), now_ms()
            if meta is None or meta.epoch != epoch or meta.fence_quiet_until > now:
                return Done(False)
            for tag, held in locks.items():
                writers = meta.locks.setdefault(tag, {})
                for left, writer in held:
                    writers[writer] = max(writers.get(writer, 0), now + left + margin_ms)
            meta.quiet_until = 0
            meta.adopted_until = now + self.horizon
            return Done(True)

    def lease_activate(self, nonce, fenced, epochs):
        with self.space.lock:
            pending = self.space.pttl(f"{self.ns}lease:{nonce}")
            meta = self.space.get(self.ns + "meta")
            if pending <= 0 or meta is None:
                return Done(False)
            if fenced:
                self.space.delete(self.ns + GEN_KEY)
            if fenced == DROP_AND_QUIET and self.horizon:
                meta.quiet_until = meta.fence_quiet_until = now_ms() + self.horizon
            meta.vouched.update(epochs)
            self.space.delete(f"{self.ns}lease:{nonce}")
            self.space.set(self.ns + "lease", 1, pending)
            return Done(True)

    def structure(self, command, keys, args, kwargs):
        with self.space.lock:
            try:
                return Done(getattr(MemoryStructures(self.space), command)(*keys, *args, **kwargs))
            except Exception as exc:  # noqa: BLE001 - reported by result(), as Redis' replies
                return Done(error=exc)

    def clear_fence(self, id_, count):
        with self.space.lock:
            meta = self.space.get(self.ns + "meta")
            if meta is not None and meta.fences.get(id_) == count:
                del meta.fences[id_]
            return Done(1)

    def clear(self):
        with self.space.lock:
            meta = self.space.data.get(self.ns + "meta")
            self.space.data.clear()
            if meta is not None:
                self.space.data[self.ns + "meta"] = meta
            return Done(True)
