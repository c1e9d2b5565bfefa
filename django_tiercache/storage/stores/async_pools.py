"""redis.asyncio connections for calls made inside a bridge (storage/bridge.py).

A RedisStore's calls take their connection from here when they run for a
coroutine: a redis.asyncio pool per event loop, process and server, so that a
loop closed by ``async_to_sync`` or a test never leaves a pool (or a socket)
behind for the next loop to trip on, and a forked child never shares its
parent's sockets. Each connection is seen through ``BridgedConnection``, which
offers the few methods of redis-py's sync Connection that RedisCall uses, each
awaiting the async one on the loop; so a call greets a restarted server,
loads the library and reads replies exactly as the sync path does.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from redis.asyncio import ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError

from ..bridge import await_only
from .base import pool_exhausted

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, LoopPool]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()
WRITE_BUFFER_LIMIT = 64 * 1024  # bytes queued on a socket before a write waits for it
DEFAULT_MAX_CONNECTIONS = 100  # per loop and server, as redis-py's own pools


class LoopPool:
    """The connections of one server for one loop: a redis.asyncio pool (which
    makes them, up to max_connections) behind a list of idle ones.

    Taking one from redis.asyncio's pool and giving it back costs awaits on its
    locks and a health check, about as much as the call itself; so a connection
    whose reply was read whole goes to the next caller directly: a coroutine
    waiting for one (all in use), else the idle list. A caller finding none and
    the pool full waits, for `wait` seconds at most, then fails as a pool that
    is exhausted does (a busy client, not a failing server: no breaker trip).
    """

    def __init__(self, pool: ConnectionPool, wait: float):
        self.pool, self.wait = pool, wait
        self.idle: list[BridgedConnection] = []
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.made = 0  # connections taken from redis.asyncio's pool, not yet returned

    def take(self) -> BridgedConnection:
        while self.idle:
            bridged = self.idle.pop()
            reader = bridged.conn._reader
            if reader is not None and not reader.at_eof():  # the server did not hang up
                return bridged
            self.discard(bridged)
        if self.made < self.pool.max_connections:
            try:
                conn = await_only(self.pool.get_connection())
            except RedisConnectionError as exc:
                if not pool_exhausted(exc):
                    raise
            else:
                self.made += 1
                return self._bridged(conn)
        return self._wait_for_one()

    def _wait_for_one(self) -> BridgedConnection:
        """The next connection given back, within `wait` seconds. A future and a
        timer: asyncio.wait_for would cost a coroutine and a shield besides, each
        time more coroutines than connections call at once."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.waiters.append(waiter)  # give_back() skips it once done (given up, cancelled)
        timer = loop.call_later(self.wait, _give_up, waiter)
        try:
            return await_only(waiter)
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give_back(waiter.result())  # handed over as we gave up: pass it on
            raise
        finally:
            timer.cancel()
            if not waiter.done():
                waiter.cancel()

    def give_back(self, bridged: BridgedConnection) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(bridged)
                return
        self.idle.append(bridged)

    def discard(self, bridged: BridgedConnection) -> None:
        """Close it and return it to redis.asyncio's pool, which may then make
        another for a coroutine waiting."""
        await_only(bridged.conn.disconnect())
        await_only(self.pool.release(bridged.conn))
        self.made -= 1
        if any(not waiter.done() for waiter in self.waiters):
            try:
                conn = await_only(self.pool.get_connection())
            except RedisConnectionError:
                return  # the waiter's own timeout ends its wait
            self.made += 1
            self.give_back(self._bridged(conn))

    def _bridged(self, conn: Any) -> BridgedConnection:
        bridged = conn.__dict__.get("_tiercache_bridged")
        if bridged is None:
            bridged = conn._tiercache_bridged = BridgedConnection(conn, self)
        return bridged


def _give_up(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(RedisConnectionError("No connection available."))


def options_key(url: str, options: dict[str, Any]) -> tuple:
    """What tells pools apart: the server and the connection options (computed once a store)."""
    return (url, *sorted((k, repr(v)) for k, v in options.items()))


def pool_for(key: tuple, make: Callable[[], ConnectionPool], wait: float) -> LoopPool:
    """The connections `key` (options_key()) names, for the running loop and this
    process (see LoopPool); `make` makes the redis.asyncio pool behind them the
    first time: a plain one, or a Sentinel one that finds the primary (sentinel.py)."""
    loop = asyncio.get_running_loop()
    pools = _pools.get(loop)
    key = (os.getpid(), *key)
    pool = None if pools is None else pools.get(key)
    if pool is not None:
        return pool
    with _lock:
        pools = _pools.setdefault(loop, {})
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = LoopPool(make(), wait)
        return pool


def async_options(options: dict[str, Any]) -> dict[str, Any]:
    """What a redis.asyncio pool takes of a cache's connection options."""
    found: dict[str, Any] = {
        "socket_timeout": options.get("SOCKET_TIMEOUT"),
        "socket_connect_timeout": options.get("SOCKET_CONNECT_TIMEOUT"),
    }
    if options.get("PASSWORD") is not None:
        found["password"] = options["PASSWORD"]
    if options.get("USERNAME") is not None:
        found["username"] = options["USERNAME"]
    pool_kwargs = options.get("CONNECTION_POOL_KWARGS") or {}
    found["max_connections"] = pool_kwargs.get("max_connections") or DEFAULT_MAX_CONNECTIONS
    return found


class BridgedConnection:
    """A redis.asyncio connection with the sync methods RedisCall calls (see above).

    One per async connection (kept on it), so that what RedisCall notes on a
    connection (the namespaces its socket greeted) lasts as long as the socket.
    """

    def __init__(self, conn: Any, pool: LoopPool):
        self.conn, self.pool = conn, pool

    @classmethod
    def take(cls, pool: LoopPool) -> BridgedConnection:
        return pool.take()

    @property
    def _sock(self) -> Any:
        return self.conn._writer  # None until connected, and after a disconnect

    def register_connect_callback(self, callback: Any) -> None:
        self.conn.register_connect_callback(callback)

    def send_command(self, *args: Any) -> None:
        """Write the command to the socket's buffer. redis.asyncio's own
        send_command wraps each write in asyncio.wait_for (a Task, and one more
        turn of the loop, per command); a write into a buffer below its limit
        cannot block, so only a full buffer is waited for (with the timeout)."""
        conn = self.conn
        if not conn.is_connected:
            await_only(conn.connect())
        writer = conn._writer
        try:
            writer.writelines(conn.pack_command(*args))
        except OSError as exc:
            await_only(conn.disconnect(nowait=True))
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            await_only(asyncio.wait_for(writer.drain(), conn.socket_timeout))

    def read_response(self) -> Any:
        return await_only(self.conn.read_response())

    def disconnect(self) -> None:
        await_only(self.conn.disconnect())

    def give_back(self) -> None:
        """To the next caller (its reply was read whole)."""
        self.pool.give_back(self)

    def discard(self) -> None:
        """Closed, since its state after a failure is unknown."""
        self.pool.discard(self)
