"""What a partition's store offers, whatever keeps the data.

Every operation starts a ``Call`` and returns at once; ``Call.result()`` waits
for the answer. Starting one call on every partition before waiting on any
lets a multi-key operation cost one round trip of latency however many
partitions it touches.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis import exceptions as redis_errors
from redis.exceptions import ConnectionError as RedisConnectionError

from ..hooks import lock_horizon_ms

UNVERIFIED = 0  # a tagged entry found while the partition's lease was gone
NO_TAGGED = -3  # READ's lease field when no tagged entry was read
NOT_FENCED, DROP_TAGGED, DROP_AND_QUIET = 0, 1, 2  # lease_activate's `fenced`
NO_LEASE = -1  # WRITE's answer for a tagged entry a partition without a lease refused
# WRITE's answer for a tagged entry refused while the partition is quiet: it lost
# (or may have missed) write locks, so it takes nothing under tags until any lock
# it could have held has expired (see lua.py, fills_allowed).
QUIET = -2


class Call(Protocol):
    def result(self) -> Any: ...


class Done:
    """A call that finished when it started (in-process stores, early failures)."""

    __slots__ = ("_value", "_error")

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self._value, self._error = value, error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True)
class Write:
    """One entry to write. ttl_ms None means forever (always > 0 otherwise)."""

    key: str
    body: bytes
    ttl_ms: int | None
    tags: tuple[str, ...] = ()
    snapshot: tuple[str, ...] | None = None  # (gen, token*) read before computing


class Store:
    """Base class of partition stores; see stores/lua.py for the semantics."""

    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        self.url, self.ns = url, ns
        # Told of a command sent later (unlock_later) that failed; the cache
        # that owns the store points it at its error policy.
        self.later_failed: Callable[[BaseException], None] = _unheard

    # True when calls made for a coroutine (storage/bridge.py) can await their
    # I/O on the loop: RedisStore's redis.asyncio connections, or no I/O at all.
    native_async = False
    # The pub/sub channel on which the store announces changes to L1 tiers
    # (stores/lua.py), or None: such a store is never fronted by an L1 tier
    # (an in-process store is as fast as one).
    channel: str | None = None
    # True when the channel is a Redis Cluster shard channel (SSUBSCRIBE), whose
    # server the store names at every connect (channel_pool; stores/cluster.py).
    sharded_channel = False
    # monotonic() when a call last reached a server the store's channel is not
    # on (a cluster slot's importing master): what such a read answers, L1 may
    # not keep, since changes made there are not announced where it listens.
    elsewhere_at = 0.0

    @property
    def horizon(self) -> int:
        return lock_horizon_ms(self.ns)

    def read(self, keys: list[str], leased: bool) -> Call:
        """-> (lease, [body | None | UNVERIFIED])."""
        raise NotImplementedError

    def write(self, writes: list[Write], nx: bool, fresh: str, leased: bool = False) -> Call:
        """-> [1 stored, 0 not, NO_LEASE not stored: tagged and leased without a lease,
        QUIET not stored: tagged while the partition is quiet]"""
        raise NotImplementedError

    def delete(self, keys: list[str]) -> Call:
        """-> number deleted"""
        raise NotImplementedError

    def touch(self, key: str, ttl_ms: int | None) -> Call:
        raise NotImplementedError

    def incr(self, key: str, delta: int) -> Call:
        """-> new value, or None when the key is missing"""
        raise NotImplementedError

    def entry(self, key: str) -> Call:
        """-> (body, pttl_ms or -1, tags) or None"""
        raise NotImplementedError

    def snapshot(
        self, tags: tuple[str, ...], ttl_ms: int | None, fresh: str, leased: bool = False
    ) -> Call:
        """-> (gen, token*) for the tags, creating the missing ones ("!" where no
        fill is allowed now); None when leased and the store holds no lease"""
        raise NotImplementedError

    def drop_tags(self, tags: tuple[str, ...]) -> Call:
        raise NotImplementedError

    def lock(self, tags: tuple[str, ...], writer: str, lock_ms: int) -> Call:
        """Invalidate the tags and refuse fills under them until unlock, or for
        lock_ms measured by the store's own clock. -> (this store's epoch,
        {id: epoch} of the partitions that copied its locks lately: see lend_locks)"""
        raise NotImplementedError

    def unlock(self, tags: tuple[str, ...], writer: str) -> Call:
        """Release the writer's locks and invalidate the tags again."""
        raise NotImplementedError

    def unlock_later(self, tags: tuple[str, ...], writer: str) -> None:
        """unlock(), sent when it suits the store: with the next command, say
        (see TierCache.unlock_tags). This one unlocks at once."""
        self.unlock(tags, writer).result()

    def release_later(self, names: list[str], owner: str) -> None:
        """release(), sent when it suits the store (see unlock_later). This one
        releases at once."""
        self.release(names, owner).result()

    def record_fence(self, ids: list[str], lease_ms: int) -> Call:
        """-> [ms the latest lease granted to each id may still run (a whole
        lease_ms from when this store last lost its memory, if more)]"""
        raise NotImplementedError

    def check_fence(self, id_: str, lease_ms: int) -> Call:
        """-> (misses recorded for id_, this store's epoch); notes the grant"""
        raise NotImplementedError

    def lease_prepare(self, nonce: str, lease_ms: int, peer_ids: list[str]) -> Call:
        """-> (this store's epoch, whether it is quiet for lost memory alone,
        [epoch each peer had when it last vouched, or None])"""
        raise NotImplementedError

    def lend_locks(self, id_: str, epoch: str) -> Call:
        """Partition `id_` (now in `epoch`) lost its memory: note that it copies the
        write locks held here (a lock taken here later tells its writer), and
        -> (whether this store is quiet itself, {tag: [(ms left, writer), ...]})"""
        raise NotImplementedError

    def adopt_locks(
        self, epoch: str, locks: dict[str, list[tuple[int, str]]], margin_ms: int
    ) -> Call:
        """Hold the locks the peers lent (ms left + margin_ms) and end the quiet
        period, if this store is still in `epoch` and not quiet for a fence. -> bool"""
        raise NotImplementedError

    def lease_activate(self, nonce: str, fenced: int, epochs: dict[str, str]) -> Call:
        """-> True if the prepared lease is now in force. fenced: NOT_FENCED,
        DROP_TAGGED (a new generation first) or DROP_AND_QUIET (and no fills
        under tags for the lock horizon)."""
        raise NotImplementedError

    def clear_fence(self, id_: str, count: int) -> Call:
        raise NotImplementedError

    def clear(self) -> Call:
        raise NotImplementedError

    def claim(self, names: list[str], owner: str, ttl_ms: int) -> Call:
        """-> [True if `owner` now holds the single-flight claim on the name (for
        ttl_ms at most; renewed if it held it), False if someone else holds it]
        per name, all in one call."""
        raise NotImplementedError

    def release(self, names: list[str], owner: str) -> Call:
        """Drop `owner`'s claims on `names` (not another owner's)."""
        raise NotImplementedError

    def structure(self, command: str, keys: list[str], args: tuple, kwargs: dict) -> Call:
        """A hash, set or sorted-set command (see structures.py), named as
        redis-py's method and called with its arguments, on keys of this
        partition: -> redis-py's reply. ``replace_set`` (key, members) makes a
        set hold exactly `members`, atomically."""
        raise NotImplementedError

    def stored_key(self, key: str) -> str:
        """The name under which the server keeps `key` (a cluster group adds its hashtag)."""
        return key

    def close(self) -> None:
        """Release connections (Django calls close() after each request)."""

    def disconnect(self) -> None:
        """Close the idle connections of the shared pools too (CLOSE_CONNECTION)."""


# Running out of pooled connections is a busy client, not a failing server.
# redis-py's ConnectionPool raises MaxConnectionsError (before redis-py 6, a
# ConnectionError with the first text); its BlockingConnectionPool, after
# waiting its `timeout`, a ConnectionError with the second.
POOL_EXHAUSTED = ("Too many connections", "No connection available.")
MaxConnectionsError = getattr(redis_errors, "MaxConnectionsError", ())


def pool_exhausted(error: BaseException) -> bool:
    """Did the call fail for want of a free connection in this process's pool?"""
    return isinstance(error, MaxConnectionsError) or (
        type(error) is RedisConnectionError and str(error) in POOL_EXHAUSTED
    )


def _unheard(error: BaseException) -> None:
    raise error


class SharedClients:
    """redis-py clients kept one per location and connection options, shared by
    every thread's backend instance (as django-redis shares its pools)."""

    def __init__(self) -> None:
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, location: str, options: dict[str, Any], connect: Callable[[], Any]) -> Any:
        timeouts = (options.get("SOCKET_TIMEOUT"), options.get("SOCKET_CONNECT_TIMEOUT"))
        key = (location, timeouts, options.get("PASSWORD"), options.get("USERNAME"))
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = connect()
            return client
