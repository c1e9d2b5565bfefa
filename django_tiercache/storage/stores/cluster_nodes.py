"""A Redis Cluster's slot map and the connections to its nodes, for threads and coroutines.

One redis-py ``RedisCluster`` per process and seeds (``shared_client``) keeps
the slot map: which master serves each slot. Sync calls and the calls made
for a coroutine (storage/bridge.py) route by that one map, so a ``MOVED`` met
on one side redirects the other too. Only the connections differ
(``NodeConnections``): a thread's come from the pool redis-py keeps per node,
a coroutine's from a redis.asyncio pool of that node for the running loop
(stores/async_pools.py: per loop and process, so a loop closed by a test or
``async_to_sync`` leaves nothing behind, and a forked child shares no socket).

redis.asyncio's own RedisCluster is not used: it would keep a second slot map
per loop, and follow redirections itself, where the store has rules of its
own before following one (a greeting, the announcement on the source before
an ``ASK``, stores/cluster_redirections.py).

Asking the cluster for its map again blocks on sockets (redis-py's
``NodesManager.initialize``): for a coroutine it runs in a worker thread, the
one thread hop of the cluster's async path, taken only after a failure or a
script that found its keys gone, and REFRESH_INTERVAL apart at most. Building
the client, which asks the seeds for the map, goes to a thread likewise.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from redis.asyncio import ConnectionPool
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ..bridge import await_only, in_bridge
from ..options import parse_cluster_url
from .async_pools import BridgedConnection, LoopPool, async_options, options_key, pool_for
from .base import SharedClients

# Refresh the slot map at most this often after failures (a dead master fails
# every call until its replica is promoted).
REFRESH_INTERVAL = 0.1

_clients = SharedClients()


def shared_client(seeds: str, options: dict[str, Any]) -> RedisCluster:
    """The RedisCluster of these seeds and connection options, one per process
    (built in a worker thread when a coroutine needs it first)."""
    if in_bridge():
        return await_only(asyncio.to_thread(shared_client, seeds, options))
    return _clients.get(seeds, options, lambda: _connect(seeds, options))


def _connect(seeds: str, options: dict[str, Any]) -> RedisCluster:
    """A RedisCluster, which asks the seeds for the slot map as it is built. A cluster
    that cannot answer yet is an unreachable partition (a ConnectionError), not an
    error that would stop the cache from being built."""
    timeouts = (options.get("SOCKET_TIMEOUT"), options.get("SOCKET_CONNECT_TIMEOUT"))
    location = parse_cluster_url(seeds)
    try:
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in location.nodes],
            username=location.username or options.get("USERNAME"),
            password=location.password or options.get("PASSWORD"),
            socket_timeout=timeouts[0],
            socket_connect_timeout=timeouts[1],
            **dict(options.get("CONNECTION_POOL_KWARGS") or {}),
        )
    except (RedisClusterException, RedisError) as exc:
        raise RedisConnectionError(f"no seed node of the cluster answered: {exc}") from exc
    client._tiercache_refreshed = 0.0  # type: ignore[attr-defined]
    client._tiercache_lock = threading.Lock()  # type: ignore[attr-defined]
    return client


def refresh_slot_map(client: RedisCluster) -> None:
    """Ask the cluster for its slot map again (not more often than REFRESH_INTERVAL;
    for a coroutine, in a worker thread: see the module docstring)."""
    with client._tiercache_lock:  # type: ignore[attr-defined]
        if time.monotonic() - client._tiercache_refreshed < REFRESH_INTERVAL:  # type: ignore[attr-defined]
            return
        client._tiercache_refreshed = time.monotonic()  # type: ignore[attr-defined]
    if in_bridge():
        await_only(asyncio.to_thread(_initialize, client))
    else:
        _initialize(client)


def _initialize(client: RedisCluster) -> None:
    try:
        client.nodes_manager.initialize()
    except Exception:  # noqa: BLE001, S110 - the next call fails and reports it
        pass


class NodeConnections:
    """Connections to a cluster's nodes: for a coroutine, a redis.asyncio one of
    the running loop's (seen through BridgedConnection, so the calls send and
    read on it as on a sync one), else one of redis-py's pool of that node."""

    def __init__(self, seeds: str, options: dict[str, Any]):
        self._seeds, self._options = seeds, options
        self._async: dict[str, Any] | None = None  # the redis.asyncio pools' options
        self._keys: dict[str, tuple] = {}  # node name -> options_key()

    def take(self, client: RedisCluster, node: ClusterNode) -> Any:
        if in_bridge():
            return BridgedConnection.take(self.loop_pool(node))
        pool = client.get_redis_connection(node).connection_pool
        conn = pool.get_connection()
        conn._tiercache_pool = pool  # type: ignore[attr-defined]  # where give_back returns it, whoever serves the slot now
        return conn

    def give_back(self, conn: Any) -> None:
        """A connection whose replies were read whole, for the next call."""
        if isinstance(conn, BridgedConnection):
            conn.give_back()
        else:
            conn._tiercache_pool.release(conn)

    def drop(self, conn: Any) -> None:
        """A connection left in an unknown state by a failure: closed."""
        if isinstance(conn, BridgedConnection):
            conn.discard()
        else:
            conn.disconnect()
            conn._tiercache_pool.release(conn)

    def command(self, client: RedisCluster, node: ClusterNode, *args: Any) -> Any:
        """One plain command on `node`: its raw reply."""
        conn = self.take(client, node)
        try:
            conn.send_command(*args)
            reply = conn.read_response()
        except ResponseError:  # an error reply leaves the connection in a clean state
            self.give_back(conn)
            raise
        except BaseException:
            self.drop(conn)
            raise
        self.give_back(conn)
        return reply

    def loop_pool(self, node: ClusterNode) -> LoopPool:
        """The redis.asyncio connections of `node` for the running loop (async_pools.py)."""
        options = self._async_options()
        key = self._keys.get(node.name)
        if key is None:
            key = self._keys[node.name] = options_key(f"cluster-node:{node.name}", options)
        wait = options["socket_timeout"] or 1.0  # for a free connection
        return pool_for(
            key, lambda: ConnectionPool(host=node.host, port=node.port, **options), wait
        )

    def _async_options(self) -> dict[str, Any]:
        if self._async is None:
            found = async_options(self._options)
            location = parse_cluster_url(self._seeds)  # its credentials win, as _connect()'s
            if location.username:
                found["username"] = location.username
            if location.password:
                found["password"] = location.password
            self._async = found
        return self._async
