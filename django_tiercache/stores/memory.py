"""An in-process partition (``memory://name``) with the same semantics as Redis.

It mirrors the Lua scripts of stores/lua.py operation for operation (tags,
tokens, generation, leases, fences, TTLs), so that the example project and
development servers behave like production without a Redis server. Spaces are
shared by every thread of a process, like Django's locmem cache; least
recently used entries are culled past OPTIONS["MEMORY_MAX_ENTRIES"].
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from .base import NO_TAGGED, UNVERIFIED, Done, Store, Write

_spaces: dict[str, _Space] = {}
_spaces_lock = threading.Lock()


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Space:
    """A dict with Redis-like expiry (absolute wall-clock milliseconds) and LRU culling."""

    def __init__(self, max_entries: int):
        self.data: OrderedDict[str, tuple[Any, int | None]] = OrderedDict()
        self.lock = threading.RLock()
        self.max_entries = max_entries

    def get(self, key: str) -> Any:
        item = self.data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= _now_ms():
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
            at_ms = _now_ms() + ttl_ms
        self.data[key] = (value, at_ms)
        self.data.move_to_end(key)
        if len(self.data) > self.max_entries:
            self._cull()

    def pttl(self, key: str) -> int:
        if self.get(key) is None:
            return -2
        at = self.data[key][1]
        return -1 if at is None else at - _now_ms()

    def expire(self, key: str, ttl_ms: int | None) -> None:
        if self.get(key) is not None:
            self.set(key, self.data[key][0], ttl_ms)

    def delete(self, key: str) -> bool:
        return self.get(key) is not None and self.data.pop(key, None) is not None

    def _cull(self) -> None:
        now = _now_ms()
        for key in [k for k, (_, at) in self.data.items() if at is not None and at <= now]:
            del self.data[key]
        while len(self.data) > self.max_entries * 9 // 10:
            self.data.popitem(last=False)


class _Tagged:
    __slots__ = ("gen", "tokens", "body")

    def __init__(self, gen: str, tokens: tuple[tuple[str, str], ...], body: bytes):
        self.gen, self.tokens, self.body = gen, tokens, body


class MemoryStore(Store):
    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        super().__init__(url, ns, options)
        name = urlsplit(url).netloc + urlsplit(url).path
        with _spaces_lock:
            self.space = _spaces.setdefault(name, _Space(options["MEMORY_MAX_ENTRIES"]))

    # -- the helpers of the Lua prelude --

    def _body(self, value: Any) -> bytes | None:
        if not isinstance(value, _Tagged):
            return value
        s = self.space
        if s.get(self.ns + "gen") != value.gen:
            return None
        if any(s.get(f"{self.ns}t:{tag}") != tok for tag, tok in value.tokens):
            return None
        return value.body

    def _extend(self, key: str, ttl_ms: int | None) -> None:
        left = self.space.pttl(key)
        if left >= 0 and (ttl_ms is None or left < ttl_ms):
            self.space.expire(key, ttl_ms)

    def _token(self, key: str, fresh: str, ttl_ms: int | None) -> str:
        tok = self.space.get(key)
        if tok is not None:
            self._extend(key, ttl_ms)
            return tok
        self.space.set(key, fresh, ttl_ms)
        return fresh

    def _tag_token(self, tag: str, fresh: str, ttl_ms: int | None) -> str:
        """The tag's token, or "!" (matching nothing) while a writer holds it locked."""
        writers = self.space.get(f"{self.ns}l:{tag}")
        if writers:
            now = _now_ms()
            for writer in [w for w, until in writers.items() if until <= now]:
                del writers[writer]
            if writers:
                return "!"
        return self._token(f"{self.ns}t:{tag}", fresh, ttl_ms)

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

    def write(self, writes: list[Write], nx, fresh):
        with self.space.lock:
            return Done([self._write(w, nx, fresh) for w in writes])

    def _write(self, w: Write, nx: bool, fresh: str) -> bool:
        if nx and self._body(self.space.get(w.key)) is not None:
            return False
        value: Any = w.body
        if w.tags:
            current = (
                self._token(self.ns + "gen", fresh, None),
                *(self._tag_token(tag, fresh, w.ttl_ms) for tag in w.tags),
            )
            if "!" in current or (w.snapshot is not None and tuple(w.snapshot) != current):
                return False
            value = _Tagged(current[0], tuple(zip(w.tags, current[1:], strict=True)), w.body)
        self.space.set(w.key, value, w.ttl_ms)
        return True

    def delete(self, keys):
        with self.space.lock:
            return Done(sum(self.space.delete(key) for key in keys))

    def touch(self, key, ttl_ms):
        with self.space.lock:
            value = self.space.get(key)
            if value is None or self._body(value) is None:
                return Done(False)
            if ttl_ms == 0:
                self.space.delete(key)
                return Done(True)
            for tag, _ in getattr(value, "tokens", ()):
                self._extend(f"{self.ns}t:{tag}", ttl_ms)
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
            body = None if value is None else self._body(value)
            if body is None:
                return Done(None)
            tags = tuple(tag for tag, _ in getattr(value, "tokens", ()))
            return Done((body, self.space.pttl(key), tags))

    def snapshot(self, tags, ttl_ms, fresh):
        with self.space.lock:
            return Done(
                (
                    self._token(self.ns + "gen", fresh, None),
                    *(self._tag_token(tag, fresh, ttl_ms) for tag in tags),
                )
            )

    def drop_tags(self, tags):
        with self.space.lock:
            return Done(sum(self.space.delete(f"{self.ns}t:{tag}") for tag in tags))

    def lock(self, tags, writer, until_ms):
        with self.space.lock:
            for tag in tags:
                key = f"{self.ns}l:{tag}"
                writers = self.space.get(key) or {}
                writers[writer] = until_ms
                self.space.set(key, writers, at_ms=max(writers.values()))
                self.space.delete(f"{self.ns}t:{tag}")
            return Done(1)

    def unlock(self, tags, writer):
        with self.space.lock:
            for tag in tags:
                (self.space.get(f"{self.ns}l:{tag}") or {}).pop(writer, None)
                self.space.delete(f"{self.ns}t:{tag}")
            return Done(1)

    def record_fence(self, ids):
        with self.space.lock:
            grants = []
            for id_ in ids:
                key = f"{self.ns}fence:{id_}"
                self.space.set(key, (self.space.get(key) or 0) + 1)
                grants.append(self.space.get(f"{self.ns}grant:{id_}"))
            return Done(grants)

    def check_fence(self, id_, deadline_ms):
        with self.space.lock:
            grant = f"{self.ns}grant:{id_}"
            if deadline_ms > (self.space.get(grant) or 0):
                self.space.set(grant, deadline_ms, at_ms=deadline_ms)
            return Done(self.space.get(f"{self.ns}fence:{id_}") or 0)

    def lease(self, deadline_ms, fenced):
        with self.space.lock:
            if fenced:
                self.space.delete(self.ns + "gen")
            self.space.set(self.ns + "lease", 1, at_ms=deadline_ms)
            return Done(1)

    def clear_fence(self, id_, count):
        with self.space.lock:
            key = f"{self.ns}fence:{id_}"
            if self.space.get(key) == count:
                self.space.delete(key)
            return Done(1)

    def clear(self):
        with self.space.lock:
            self.space.data.clear()
            return Done(True)
