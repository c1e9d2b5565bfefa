"""TierCache's async API: the sync methods run natively on the event loop.

Each ``a...`` method runs its sync twin inside a bridge (storage/bridge.py):
the same code, with its network I/O awaited on redis.asyncio connections of
the running loop, so an entry written by one side is read by the other, an
invalidation made on one side is honoured by the other, and both share the
process's L1. No thread is involved, so a hung partition delays only the
coroutines that wait on it.

Where a cache cannot run natively, its calls go through ``sync_to_async`` as
Django's own backends do: a cache with a WITNESS (it writes through the ORM,
which Django does not allow inside an event loop). ``native_async`` says
which. Sentinel and Cluster partitions are native: a Sentinel one's
connections find the primary through redis.asyncio's Sentinel client, a
Cluster one's are redis.asyncio connections to the master the slot map names
(storage/stores/cluster_nodes.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from redis.exceptions import LockError

from .storage import bridge


class AsyncAPI:
    """Mixin of TierCache: its attributes and methods are TierCache's."""

    native_async: bool = False

    async def _native(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.native_async:
            return await bridge.run(method, *args, **kwargs)
        return await sync_to_async(method)(*args, **kwargs)

    # -- Django's async API --

    async def aget(self, key: str, default: Any = None, version: int | None = None) -> Any:
        return await self._native(self.get, key, default, version)  # type: ignore[attr-defined]

    async def aget_many(self, keys: Any, version: int | None = None) -> dict[str, Any]:
        return await self._native(self.get_many, list(keys), version)  # type: ignore[attr-defined]

    async def ahas_key(self, key: str, version: int | None = None) -> bool:
        return await self._native(self.has_key, key, version)  # type: ignore[attr-defined]

    async def aset(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, tags=()):
        return await self._native(self.set, key, value, timeout, version, tags=tags)  # type: ignore[attr-defined]

    async def aadd(self, key, value, timeout=DEFAULT_TIMEOUT, version=None, tags=()):
        return await self._native(self.add, key, value, timeout, version, tags=tags)  # type: ignore[attr-defined]

    async def aset_many(self, data, timeout=DEFAULT_TIMEOUT, version=None, tags=()):
        return await self._native(self.set_many, data, timeout, version, tags=tags)  # type: ignore[attr-defined]

    async def aget_or_set(self, key, default, timeout=DEFAULT_TIMEOUT, version=None, tags=()):
        """get_or_set(); `default` may be an async function, awaited once per missed key
        across coroutines, threads and processes (single flight)."""
        load = self._loader(default)
        return await self._native(self.get_or_set, key, load, timeout, version, tags=tags)  # type: ignore[attr-defined]

    async def adelete(self, key: str, version: int | None = None) -> bool:
        return await self._native(self.delete, key, version)  # type: ignore[attr-defined]

    async def adelete_many(self, keys: Any, version: int | None = None) -> int:
        return await self._native(self.delete_many, list(keys), version)  # type: ignore[attr-defined]

    async def atouch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version=None) -> bool:
        return await self._native(self.touch, key, timeout, version)  # type: ignore[attr-defined]

    async def aincr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return await self._native(self.incr, key, delta, version)  # type: ignore[attr-defined]

    async def adecr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return await self._native(self.decr, key, delta, version)  # type: ignore[attr-defined]

    async def aincr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return await self._native(self.incr_version, key, delta, version)  # type: ignore[attr-defined]

    async def adecr_version(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return await self._native(self.decr_version, key, delta, version)  # type: ignore[attr-defined]

    async def aclear(self) -> None:
        return await self._native(self.clear)  # type: ignore[attr-defined]

    async def aclose(self, **kwargs: Any) -> None:
        return await self._native(self.close, **kwargs)  # type: ignore[attr-defined]

    # -- tags and django-redis' extras --

    async def ainvalidate_tags(self, *tags: str) -> None:
        return await self._native(self.invalidate_tags, *tags)  # type: ignore[attr-defined]

    async def aget_or_set_many(self, keys, load, timeout=DEFAULT_TIMEOUT, version=None):
        return await self._native(self.get_or_set_many, keys, self._loader(load), timeout, version)  # type: ignore[attr-defined]

    async def attl(self, key: str, version: int | None = None) -> int | None:
        return await self._native(self.ttl, key, version)  # type: ignore[attr-defined]

    async def apttl(self, key: str, version: int | None = None) -> int | None:
        return await self._native(self.pttl, key, version)  # type: ignore[attr-defined]

    async def aexpire(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version=None) -> bool:
        return await self._native(self.expire, key, timeout, version)  # type: ignore[attr-defined]

    async def apexpire(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version=None) -> bool:
        return await self._native(self.pexpire, key, timeout, version)  # type: ignore[attr-defined]

    async def apersist(self, key: str, version: int | None = None) -> bool:
        return await self._native(self.persist, key, version)  # type: ignore[attr-defined]

    async def adelete_pattern(self, pattern: str, version=None, itersize=None) -> int:
        return await self._native(self.delete_pattern, pattern, version, itersize)  # type: ignore[attr-defined]

    async def akeys(self, search: str, version: int | None = None) -> list[str]:
        return await self._native(self.keys, search, version)  # type: ignore[attr-defined]

    def alock(
        self,
        key: str,
        version: int | None = None,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
    ) -> AsyncLock:
        """lock() for coroutines: ``async with cache.alock("report:build", timeout=60):``.

        The same lock (a sync lock() and an alock() of one key exclude each
        other); its calls, and the sleeps of a blocking acquire, run in worker
        threads, so a wait for the lock never holds up the loop.
        """
        lock = self.lock(key, version, timeout, sleep, blocking, blocking_timeout, False)  # type: ignore[attr-defined]
        return AsyncLock(lock)

    def _loader(self, load: Any) -> Any:
        """A sync stand-in for an async loader: awaited on the loop when native."""
        if not inspect.iscoroutinefunction(load):
            return load

        def loaded(*args: Any) -> Any:
            if bridge.in_bridge():
                return bridge.await_only(load(*args))
            return async_to_sync(load)(*args)

        return loaded


class AsyncLock:
    """A cache lock (redis_compat.py) with awaitable methods. Not thread-local:
    acquire and release may run in different worker threads."""

    def __init__(self, lock: Any):
        self.lock = lock

    async def acquire(self, blocking: bool | None = None, blocking_timeout: float | None = None):
        return await self._in_a_thread(
            self.lock.acquire, blocking=blocking, blocking_timeout=blocking_timeout
        )

    async def release(self) -> None:
        await self._in_a_thread(self.lock.release)

    async def locked(self) -> bool:
        return await self._in_a_thread(self.lock.locked)

    async def owned(self) -> bool:
        return await self._in_a_thread(self.lock.owned)

    async def __aenter__(self) -> AsyncLock:
        if await self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified")

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.release()

    @staticmethod
    async def _in_a_thread(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # Not the one thread sync_to_async funnels into: a blocking acquire may wait long.
        return await sync_to_async(method, thread_sensitive=False)(*args, **kwargs)
