"""A partition on a Sentinel-managed primary, through redis-py's Sentinel support.

``redis+sentinel://[user:password@]s1:26379,s2:26379/<service>/<db>`` names the
sentinels, the service they watch and the database. Every new connection asks
the sentinels where the primary is, so after a failover the partition follows
the promoted replica by itself; until Sentinel names one, calls fail as they
do on a dead partition (the breaker opens, reads miss, nothing stale is read).

A failover is treated as a partition that may have missed invalidations.
Replication is asynchronous: the promoted replica may lack the last tag
drops and locks its old primary acknowledged. It also holds a copy of the old
primary's meta hash, whose ``run`` is the old primary's run_id; the ``hello``
greeting every new connection sends first (stores/redis.py, stores/lua.py)
finds a different run_id and starts the hash over: a new generation (every
tagged entry dropped), no lease, a new epoch (so the other partitions fence
it at its next lease) and no fills under tags for the write-lock horizon.
Untagged entries survive; like any write Redis acknowledged but did not
replicate, the last writes to them before the failover may be lost.

Calls made for a coroutine (storage/bridge.py) take their connections from a
redis.asyncio Sentinel pool of the running loop (async_primary_pool): the same
discovery, the same greeting, the same rules.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..options import SentinelLocation, parse_sentinel_url
from .base import SharedClients
from .redis import RedisStore

# One Sentinel client (and so one pool of connections to the primary) per
# location and connection options, shared by every thread's backend, as
# django-redis shares its pools.
_clients = SharedClients()


def shared_client(url: str, options: dict[str, Any]) -> Redis:
    """The client of the primary this URL names, one per process and connection options."""
    return _clients.get(url, options, lambda: _connect(parse_sentinel_url(url), options))


def _connect(location: SentinelLocation, options: dict[str, Any]) -> Redis:
    connection: dict[str, Any] = {
        "socket_timeout": options.get("SOCKET_TIMEOUT"),
        "socket_connect_timeout": options.get("SOCKET_CONNECT_TIMEOUT"),
    }
    credentials: dict[str, Any] = {
        "username": location.username or options.get("USERNAME"),
        "password": location.password or options.get("PASSWORD"),
    }
    # No retries inside redis-py: its default for a client made without a pool
    # (as Sentinel makes them) is three, with backoffs of up to 10 s between
    # them, so a call to a partition whose sentinels are all down would sleep
    # for seconds before failing. A failed call fails at once here; the
    # partition's breaker and error policy decide what follows, as for Redis.
    connection["retry"] = Retry(NoBackoff(), 0)
    # The sentinels take the timeouts and the retry; the primary, credentials too.
    sentinel = Sentinel(location.sentinels, sentinel_kwargs=dict(connection), **connection)
    pool_kwargs = dict(options.get("CONNECTION_POOL_KWARGS") or {})
    return sentinel.master_for(location.service, db=location.db, **credentials, **pool_kwargs)


def async_primary_pool(url: str, options: dict[str, Any]) -> Any:
    """A redis.asyncio pool of the primary this URL names (for one event loop,
    stores/async_pools.py): its connections ask redis.asyncio's Sentinel client
    where the primary is, as the sync ones do; `options` are async_options()'."""
    location = parse_sentinel_url(url)
    connection: dict[str, Any] = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": AsyncRetry(NoBackoff(), 0),  # as _connect(): a failed call fails at once
    }
    credentials: dict[str, Any] = {
        "username": location.username or options.get("username"),
        "password": location.password or options.get("password"),
    }
    sentinel = AsyncSentinel(location.sentinels, sentinel_kwargs=dict(connection), **connection)
    primary = sentinel.master_for(
        location.service,
        db=location.db,
        max_connections=options["max_connections"],
        **credentials,
    )
    return primary.connection_pool


class SentinelStore(RedisStore):
    """A RedisStore whose connections go to whichever server Sentinel names primary."""

    def _connect(self, url: str, options: dict[str, Any]) -> Redis:
        return shared_client(url, options)

    def _async_pool(self) -> Any:
        return async_primary_pool(self.url, self._async_options)

    def placement(self) -> dict[str, Any]:
        host, port = self.pool.get_master_address()  # asks the sentinels
        return {"role": "sentinel primary", "address": f"{host}:{port}"}
