"""django-redis' cache methods on TierCache, for projects that switch to it.

Time to live (ttl, pttl, expire, pexpire, expire_at, pexpire_at, persist),
pattern deletes and key listing across every partition (delete_pattern,
iter_keys, keys) and locks (lock), with django-redis' return values, on every
kind of partition: one Redis server, several, or memory://. Keys are the
caller's keys, namespaced by KEY_PREFIX and VERSION as in every other method.

Expiry goes through the partition's own operations (``entry``, ``touch``), so a
tagged entry keeps its tags' tokens alive as long as itself and an entry whose
tags were invalidated counts as missing. Listing keys is the one thing the
stores do not offer: on Redis it is SCAN on the partition's client, on
memory:// a walk over the in-process space.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from redis.exceptions import LockError, LockNotOwnedError, RedisError, ResponseError
from redis.lock import Lock

from .exceptions import PartitionUnavailable
from .storage import front
from .storage.partition import UNREACHABLE, Outcome, Partition
from .storage.stores.memory import MemoryStore
from .storage.stores.memory import now_ms as memory_now_ms

DEFAULT_ITERSIZE = 100  # keys asked for per SCAN call (Redis' COUNT hint) and deleted per DEL

Seconds = int | float | timedelta


class DjangoRedisAPI:
    """Mixin of TierCache: its attributes and methods are TierCache's."""

    _partitions: list[Partition]
    _policy: Any  # failures.ErrorPolicy
    _partition: Callable[[str], Partition]
    _run: Callable[..., Outcome]
    make_key: Callable[..., str]
    make_and_validate_key: Callable[..., str]
    _ttl_ms: Callable[[Any], int | None]

    # -- time to live --

    def ttl(self, key: str, version: int | None = None) -> int | None:
        """Seconds `key` has left: None if it never expires, 0 if it does not exist.

        Rounded to the nearest second, as Redis' TTL does.
        """
        left = self.pttl(key, version=version)
        return left if not left else (left + 500) // 1000

    def pttl(self, key: str, version: int | None = None) -> int | None:
        """Milliseconds `key` has left: None if it never expires, 0 if it does not exist.

        An entry whose tags were invalidated does not exist, here as for get().
        A hash or set (structures.py) has its own time to live.
        """
        made = self.make_and_validate_key(key, version=version)
        outcome = self._run_any_kind(made, "entry")
        if _holds_structure(outcome):
            left = self._structure_call(made, "pttl")
            return 0 if left is None or left == -2 else (None if left < 0 else left)
        entry = outcome.value if outcome.ok else None
        if entry is None:
            return 0
        return None if entry[1] < 0 else entry[1]

    def expire(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """Let `key` live `timeout` seconds from now (0 or less deletes it); False if missing.

        DEFAULT_TIMEOUT means the cache's TIMEOUT, None never to expire."""
        if timeout is DEFAULT_TIMEOUT or timeout is None:
            return self._expire_default(key, timeout, version)
        return self._expire_in(key, _ms(timeout, 1000), version)

    def pexpire(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        """expire() in milliseconds (a timedelta is read as a duration)."""
        if timeout is DEFAULT_TIMEOUT or timeout is None:
            return self._expire_default(key, timeout, version)
        return self._expire_in(key, _ms(timeout, 1), version)

    def _expire_default(self, key: str, timeout: Any, version: int | None) -> bool:
        made = self.make_and_validate_key(key, version=version)
        return self._touch(made, self._ttl_ms(timeout))

    def expire_at(self, key: str, when: datetime | float, version: int | None = None) -> bool:
        """Let `key` live until `when` (a datetime or a Unix time in seconds); False if missing.

        A moment in the past deletes the key, as Redis' EXPIREAT does.
        """
        at_ms = when.timestamp() * 1000 if isinstance(when, datetime) else when * 1000
        return self._expire_in(key, int(at_ms - time.time() * 1000), version)

    def pexpire_at(self, key: str, when: datetime | int, version: int | None = None) -> bool:
        """expire_at() with a Unix time in milliseconds (or a datetime)."""
        at_ms = when.timestamp() * 1000 if isinstance(when, datetime) else when
        return self._expire_in(key, int(at_ms - time.time() * 1000), version)

    def persist(self, key: str, version: int | None = None) -> bool:
        """Make `key` never expire; True if it had an expiry to remove (as Redis' PERSIST)."""
        made = self.make_and_validate_key(key, version=version)
        outcome = self._run_any_kind(made, "entry")
        if _holds_structure(outcome):
            return bool(self._structure_call(made, "persist"))
        if not outcome.ok or outcome.value is None or outcome.value[1] < 0:
            return False
        return self._touch(made, None)

    def _expire_in(self, key: str, ttl_ms: int, version: int | None) -> bool:
        made = self.make_and_validate_key(key, version=version)
        # The partition's touch treats 0 as "delete now", as Redis does a past expiry.
        return self._touch(made, max(ttl_ms, 0))

    def _touch(self, made: str, ttl_ms: int | None) -> bool:
        outcome = self._run_any_kind(made, "touch", ttl_ms)
        if _holds_structure(outcome):
            if ttl_ms is None:
                self._structure_call(made, "persist")
                return True
            return bool(self._structure_call(made, "pexpire", ttl_ms))
        return bool(outcome.value) if outcome.ok else False

    def _run_any_kind(self, made: str, operation: str, *args: Any) -> Outcome:
        """_run(), except that a key holding a hash or set (WRONGTYPE) is left to the caller."""
        outcome = self._partition(made).run(operation, made, *args)
        if operation == "touch" and getattr(self, "_l1", None) is not None:
            front.changed_keys(self, [made])
        if not outcome.ok and not _holds_structure(outcome):
            self._policy.failed(operation, outcome.partition.name, outcome.error)
        return outcome

    def _structure_call(self, made: str, command: str, *args: Any) -> Any:
        """A plain command on a hash or set's key (structures.py); None if it failed."""
        partition = self._partition(made)
        outcome = partition.run("structure", command, [made], args, {})
        if not outcome.ok:
            self._policy.failed(command, partition.name, outcome.error)
            return None
        return outcome.value

    # -- keys by pattern, on every partition --

    def iter_keys(
        self, search: str, itersize: int | None = None, version: int | None = None
    ) -> Iterator[str]:
        """Yield the keys matching the glob `search` ("user:*"), partition after partition.

        Keys come back as given to set() (without KEY_PREFIX and version). On Redis
        this is SCAN with `itersize` as its COUNT hint, so it never blocks the
        server. An entry whose tags were invalidated is listed until it expires or
        is overwritten (get() reads it as a miss).
        """
        pattern = self.make_key(search, version=version)
        head = self.make_key("", version=version)
        for partition in self._partitions:
            for batch in self._scan(partition, pattern, itersize, "iter_keys"):
                for made in batch:
                    yield made[len(head) :] if made.startswith(head) else made

    def keys(self, search: str, version: int | None = None) -> list[str]:
        """The keys matching the glob `search`, as a list (see iter_keys)."""
        return list(self.iter_keys(search, version=version))

    def delete_pattern(
        self, pattern: str, version: int | None = None, itersize: int | None = None
    ) -> int:
        """Delete every key matching the glob `pattern` on every partition; return how many.

        It walks every key of every partition: tags (invalidate_tags) reach the
        same entries in one call per partition, whatever their number.
        """
        deleted = 0
        l1 = getattr(self, "_l1", None)
        for slot, partition in enumerate(self._partitions):
            scanned = self._scan(partition, self.make_key(pattern, version=version), itersize)
            for batch in scanned:
                outcome = partition.run("delete", batch)
                if l1 is not None:
                    # As every other delete: this process's own copies go at once
                    # (other processes hear of it on the partition's channel).
                    l1.changed(slot, "k", batch)
                if outcome.ok:
                    deleted += outcome.value
                else:
                    self._policy.failed("delete_pattern", partition.name, outcome.error)
        return deleted

    def _scan(
        self,
        partition: Partition,
        pattern: str,
        itersize: int | None,
        operation: str = "delete_pattern",
    ) -> Iterator[list[str]]:
        """Batches of made keys on `partition` that match `pattern`; a failure is
        handled by the error policy (raised, or logged and the partition skipped)."""
        size: int = itersize or getattr(settings, "DJANGO_REDIS_SCAN_ITERSIZE", DEFAULT_ITERSIZE)  # type: ignore[assignment]
        if not partition.breaker.allows():
            unavailable = PartitionUnavailable(
                f"circuit breaker open for partition {partition.name}"
            )
            self._policy.failed(operation, partition.name, unavailable)
            return
        try:
            yield from _batches(scanned(partition, pattern, size), size)
        except UNREACHABLE as exc:
            partition.breaker.failed()
            self._policy.failed(operation, partition.name, exc)

    # -- locks --

    def lock(
        self,
        key: str,
        version: int | None = None,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
    ) -> Any:
        """A lock named `key` on the partition that holds `key`.

        On Redis, redis-py's ``Lock`` (shared by every process using the server);
        on memory://, an in-process ``MemoryLock`` with the same methods, which
        only excludes threads of this process. Use it as a context manager::

            with cache.lock("report:build", timeout=60):
                ...

        The lock lives under the key itself: do not cache a value under the same
        name. Its token is an entry of this cache, so has_key() is True (and get()
        gives a "lock:..." string) while the lock is held.
        """
        made = self.make_and_validate_key(key, version=version)
        store = self._partition(made).store

        def token() -> bytes:
            return self._codec.encode(made, f"lock:{uuid.uuid4().hex}")  # type: ignore[attr-defined]

        if isinstance(store, MemoryStore):
            return MemoryLock(
                store, made, timeout, sleep, blocking, blocking_timeout, thread_local, token
            )
        return EntryLock(
            self,
            made,
            store,
            token,
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            thread_local=thread_local,
        )


class EntryLock(Lock):
    """redis-py's Lock whose token is a signed entry of the cache (see lock()).

    Releasing it deletes the entry, which L1 tiers are told of as of any
    delete: this process's copy goes at once, other processes hear it on the
    partition's channel.
    """

    def __init__(
        self, cache: Any, made: str, store: Any, token: Callable[[], bytes], **kwargs: Any
    ):
        super().__init__(store.client, store.stored_key(made), **kwargs)
        self._cache, self._made, self._store, self._token = cache, made, store, token

    def acquire(
        self,
        sleep: float | None = None,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        token: Any = None,
    ) -> bool:
        token = self._token() if token is None else token
        return super().acquire(sleep, blocking, blocking_timeout, token)

    def do_release(self, expected_token: Any) -> None:
        super().do_release(expected_token)
        if getattr(self._cache, "_l1", None) is None:
            return
        front.changed_keys(self._cache, [self._made])
        store = self._store
        command = "SPUBLISH" if store.sharded_channel else "PUBLISH"
        message = "k" + json.dumps([store.stored_key(self._made)])
        try:
            store.server_client().execute_command(command, store.channel, message)
        except RedisError as exc:  # the subscribers' MAX_LAG bound still holds
            self._cache._policy.failed("lock", self._cache._partition(self._made).name, exc)


class MemoryLock:
    """An expiring lock in a memory:// partition, with redis-py Lock's methods.

    It excludes the threads of this process only (memory:// partitions are
    per process).
    """

    def __init__(
        self,
        store: MemoryStore,
        name: str,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        thread_local: bool = True,
        token: Callable[[], Any] = lambda: uuid.uuid4().hex,
    ):
        self.space, self.name, self.timeout = store.space, name, timeout
        self._token = token
        self.sleep, self.blocking, self.blocking_timeout = sleep, blocking, blocking_timeout
        self._held: Any = threading.local() if thread_local else type("Held", (), {})()
        self._held.token = None

    def acquire(self, blocking: bool | None = None, blocking_timeout: float | None = None) -> bool:
        """Take the lock; without blocking, or past blocking_timeout, return False."""
        blocking = self.blocking if blocking is None else blocking
        wait = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        deadline = None if wait is None else time.monotonic() + wait
        token = self._token()
        ttl_ms = None if self.timeout is None else int(self.timeout * 1000)
        while True:
            with self.space.lock:
                if self.space.get(self.name) is None:
                    self.space.set(self.name, token, ttl_ms)
                    self._held.token = token
                    return True
            if not blocking or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(self.sleep)

    def release(self) -> None:
        """Give the lock back; LockNotOwnedError if it expired or another holder has it."""
        token, self._held.token = getattr(self._held, "token", None), None
        if token is None:
            raise LockError("Cannot release an unlocked lock")
        with self.space.lock:
            if self.space.get(self.name) != token:
                raise LockNotOwnedError("Cannot release a lock that's no longer owned")
            self.space.delete(self.name)

    def locked(self) -> bool:
        """Is the lock held, by anyone?"""
        with self.space.lock:
            return self.space.get(self.name) is not None

    def owned(self) -> bool:
        """Is the lock held with this object's token (in this thread, if thread-local)?"""
        token = getattr(self._held, "token", None)
        with self.space.lock:
            return token is not None and self.space.get(self.name) == token

    def __enter__(self) -> MemoryLock:
        if self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def _holds_structure(outcome: Outcome) -> bool:
    """Did a Function refuse the key because it holds a hash or set, not an entry?"""
    return isinstance(outcome.error, ResponseError) and "WRONGTYPE" in str(outcome.error)


def _ms(duration: Seconds, unit_ms: int) -> int:
    if isinstance(duration, timedelta):
        return int(duration.total_seconds() * 1000)
    return int(duration * unit_ms)


def _batches(keys: Iterator[str] | list[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def scanned(partition: Partition, pattern: str, count: int) -> Iterator[str]:
    """The made keys on `partition` that match the glob `pattern`, as found: SCAN with
    `count` as its hint on Redis, a walk over the space on memory://. Errors are raised."""
    store = partition.store
    if isinstance(store, MemoryStore):
        return iter(_memory_keys(store, pattern))
    return store.scan_keys(pattern, count)  # type: ignore[attr-defined]


def _memory_keys(store: MemoryStore, pattern: str) -> list[str]:
    """The live keys of a memory:// space that match a Redis glob pattern."""
    matches = re.compile(redis_glob_to_regex(pattern), re.DOTALL).fullmatch
    now = memory_now_ms()  # the space's own (monotonic) clock
    with store.space.lock:
        items = list(store.space.data.items())
    return [k for k, (_, at) in items if (at is None or at > now) and matches(k)]


def redis_glob_to_regex(pattern: str) -> str:
    """A regular expression matching what Redis' glob `pattern` matches.

    Redis globs: ``*`` any run, ``?`` one character, ``[abc]``, ``[^a]``,
    ``[a-z]``, and ``\\`` quoting the next character.
    """
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            escaped = "".join(c if c == "-" else re.escape(c) for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
