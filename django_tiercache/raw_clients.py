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
- ``get_client(write=False)``: the same, but on a replica when the partition
  has some (OPTIONS["READ_REPLICAS"]), picked as django-redis picks among
  ``LOCATION[1:]``. Only these raw clients read from replicas: the cache's own
  commands go to the primaries, since a replica may lag and an entry read
  there could be one an invalidation already replaced.
- ``_server`` and ``_clients``, django-redis' lists behind a key-less
  ``get_client()``: index 0 is for writes (the partition's primary, or the
  router over the primaries), 1 and on for reads (each partition's first
  replica, or a router over them, and so on); ``_clients`` is filled as they
  are first asked for.
- ``make_key``, ``encode``/``decode`` (of structure members, as structures.py
  stores them), ``_serializer``, ``_compressor``, ``_backend``, ``close()``.

A Cluster slot group keeps its keys under a hashtag: the router adds it, a
partition's own client (``get_client(key=...)``) is redis-py's RedisCluster,
to which the key must be given as stored (``store.stored_key``). A memory://
partition has no redis-py client: ``get_client`` raises TypeError there.
"""

from __future__ import annotations

import random
from typing import Any

from django_redis.compressors.identity import IdentityCompressor

from .storage.stores.memory import MemoryStore
from .storage.stores.redis import connect
from .structures import MEMBER_CONTEXT


class DjangoRedisClient:
    """django-redis' ``cache.client``, for a TierCache."""

    def __init__(self, cache: Any):
        self._backend = cache
        partitions = cache._partitions
        # Read set i (i >= 1) is each partition's i-th replica (_url_of).
        width = max((len(urls) for urls in cache._read_replicas.values()), default=0)
        self._server = [
            ",".join(_url_of(cache, p, i) for p in partitions) for i in range(width + 1)
        ]
        self._clients: list[Any] = [None] * len(self._server)

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
        """The redis-py client of the partition holding `key`, a replica of it for
        reads where it has some (see the module docstring); `show_index` adds the
        partition's index (with `key`) or the client's in ``_clients``."""
        if key is not None:
            partition = self._backend._partition(key)
            index = self._backend._partitions.index(partition)
            client = _partition_client(self._backend, partition, write)
            return (client, index) if show_index else client
        index = self.get_next_client_index(write, tried)
        if self._clients[index] is None:
            self._clients[index] = self.connect(index)
        client = self._clients[index]
        return (client, index) if show_index else client

    def get_client_with_index(self, write: bool = True, tried: Any = None) -> tuple[Any, Any]:
        return self.get_client(write, tried, show_index=True)

    def get_next_client_index(self, write: bool = True, tried: Any = None) -> int:
        """django-redis' choice: 0 (the primaries) for writes, a read set for
        reads, one not yet `tried` (indexes that failed) if there is one."""
        count = len(self._server)
        if write or count == 1:
            return 0
        if tried:
            untried = [i for i in range(count) if i not in tried]
            return random.choice(untried) if untried else 0  # noqa: S311 - spreading load
        return random.randint(1, count - 1)  # noqa: S311 - spreading load

    def connect(self, index: int = 0) -> Any:
        """The client behind ``_clients[index]``: 0 the primaries, i their i-th replicas."""
        cache = self._backend
        if len(cache._partitions) > 1:
            return KeyRouter(cache, index)
        return _indexed_client(cache, cache._partitions[0], index)

    def close(self, **kwargs: Any) -> None:
        self._backend._close_connections()


class KeyRouter:
    """A redis-py client look-alike over several partitions: each command goes to the
    partition of its first argument, a made key (``client.hget(cache.make_key("k"), "f")``)."""

    def __init__(self, cache: Any, replica: int = 0):
        self._cache = cache
        self._replica = replica  # 0: the primaries; i: each partition's i-th replica

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
            partition = self._cache._partition(key)
            client = _indexed_client(self._cache, partition, self._replica)
            return getattr(client, command)(partition.store.stored_key(key), *args[1:], **kwargs)

        return routed


def _redis_client(store: Any) -> Any:
    if isinstance(store, MemoryStore):
        raise TypeError(f"{store.url} is an in-process partition: it has no Redis client")
    return store.client


def _replicas(cache: Any, partition: Any) -> list[str]:
    return cache._read_replicas.get(partition.name, [])


def _url_of(cache: Any, partition: Any, index: int) -> str:
    """The URL read set `index` reaches on `partition`: 0 the partition's own, i its
    i-th replica (counted round, so that a partition with fewer still reads on one)."""
    replicas = _replicas(cache, partition)
    if index == 0 or not replicas:
        return partition.url
    return replicas[(index - 1) % len(replicas)]


def _indexed_client(cache: Any, partition: Any, index: int) -> Any:
    if index == 0 or not _replicas(cache, partition):
        return _redis_client(partition.store)
    url = _url_of(cache, partition, index)
    client = cache._replica_clients.get(url)
    if client is None:  # one per URL and cache instance (its pool is shared anyway)
        client = cache._replica_clients[url] = connect(url, cache._connection_options)
    return client


def _partition_client(cache: Any, partition: Any, write: bool) -> Any:
    """A partition's primary client, or for a read one of its replicas at random."""
    replicas = _replicas(cache, partition)
    if write or not replicas:
        return _redis_client(partition.store)
    return _indexed_client(cache, partition, random.randint(1, len(replicas)))  # noqa: S311
