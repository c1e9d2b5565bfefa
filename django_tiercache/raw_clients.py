"""``cache.client``: what code written for django-redis reaches for beyond the cache API.

django-redis code often takes the raw redis-py client (``cache.client.get_client()``,
``django_redis.get_redis_connection()``) to run a command the cache does not
offer, or makes keys and encodes values the way the cache does. TierCache's
``client`` offers the same names:

- ``get_client(write=True, key=None)``: the redis-py client of the partition
  that holds `key` (a made key, as ``make_key`` gives it). Without a key, the
  one partition's client; over several partitions, a ``KeyRouter`` that sends
  each command to the partition its first argument (a key) maps to, and
  refuses commands with no key, which would reach one partition only.
- ``make_key``, ``encode``/``decode`` (of structure members, as structures.py
  stores them), ``_serializer``, ``_compressor``, ``_backend``, ``close()``.

A Cluster slot group keeps its keys under a hashtag: the router adds it, a
partition's own client (``get_client(key=...)``) is redis-py's RedisCluster,
to which the key must be given as stored (``store.stored_key``). A memory://
partition has no redis-py client: ``get_client`` raises TypeError there.
"""

from __future__ import annotations

from typing import Any

from django_redis.compressors.identity import IdentityCompressor

from .storage.stores.memory import MemoryStore
from .structures import MEMBER_CONTEXT


class DjangoRedisClient:
    """django-redis' ``cache.client``, for a TierCache."""

    def __init__(self, cache: Any):
        self._backend = cache
        self._server = [p.url for p in cache._partitions]

    @property
    def _serializer(self) -> Any:
        return self._backend._codec.serializer

    @property
    def _compressor(self) -> Any:
        return self._backend._codec.compressor

    def _has_compression_enabled(self) -> bool:
        return not isinstance(self._compressor, IdentityCompressor)

    def make_key(self, key: str, version: int | None = None, prefix: str | None = None) -> str:
        return self._backend.make_key(key, version=version)

    def encode(self, value: Any) -> bytes:
        """`value` as a structure member is stored (signed unless a plain integer)."""
        return self._backend._codec.encode(MEMBER_CONTEXT, value)

    def decode(self, value: bytes) -> Any:
        """A stored structure member's value; codec.Tampered if this application did not sign it."""
        return self._backend._codec.decode(MEMBER_CONTEXT, value)

    def get_client(
        self,
        write: bool = True,
        tried: Any = None,
        show_index: bool = False,
        key: str | None = None,
    ) -> Any:
        """The redis-py client of the partition holding `key` (see the module docstring).

        `write` and `tried` are accepted for django-redis' signature: every
        partition is a primary, so reads and writes go to the same server.
        """
        partitions = self._backend._partitions
        if key is not None:
            index = partitions.index(self._backend._partition(key))
        elif len(partitions) == 1:
            index = 0
        else:
            router = KeyRouter(self._backend)
            return (router, None) if show_index else router
        client = _redis_client(partitions[index].store)
        return (client, index) if show_index else client

    def get_client_with_index(self, write: bool = True, tried: Any = None) -> tuple[Any, Any]:
        return self.get_client(write, tried, show_index=True)

    def close(self, **kwargs: Any) -> None:
        self._backend._close_connections()


class KeyRouter:
    """A redis-py client look-alike over several partitions: each command goes to the
    partition of its first argument, a made key (``client.hget(cache.make_key("k"), "f")``)."""

    def __init__(self, cache: Any):
        self._cache = cache

    def __getattr__(self, command: str) -> Any:
        if command.startswith("_"):
            raise AttributeError(command)

        def routed(*args: Any, **kwargs: Any) -> Any:
            if not args or not isinstance(args[0], str | bytes):
                raise TypeError(
                    f"{command}() has no key to route by over "
                    f"{len(self._cache._partitions)} partitions: use "
                    "cache.client.get_client(key=cache.make_key(...)) for that partition's client"
                )
            key = args[0].decode() if isinstance(args[0], bytes) else args[0]
            store = self._cache._partition(key).store
            client = _redis_client(store)
            return getattr(client, command)(store.stored_key(key), *args[1:], **kwargs)

        return routed


def _redis_client(store: Any) -> Any:
    if isinstance(store, MemoryStore):
        raise TypeError(f"{store.url} is an in-process partition: it has no Redis client")
    return store.client
