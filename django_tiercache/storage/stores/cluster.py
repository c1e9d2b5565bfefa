"""A Redis Cluster as storage: slot groups, each a partition in one hash slot.

``redis+cluster://[user:password@]host:port[,host:port...]/`` names seed nodes;
redis-py's ``RedisCluster`` finds the rest and keeps the slot map. The cache
spreads its keys over ``OPTIONS["CLUSTER_SLOT_GROUPS"]`` (N) *slot groups*.
Each group is a partition of its own (options.py expands the URL into N,
``...#<i>/<N>``), and everything of a group lives in one hash slot: its
entries (stored as ``{<hashtag>}<key>``), its tag tokens, generation, lease
and meta hash (below the namespace ``<prefix>:_tc:{<hashtag>}:``). So the
Functions of stores/lua.py run unchanged: a read checks an entry against
its tokens in one call on one node, and the leases and fences between
partitions work between groups, which sit on different masters.

The hashtags are chosen so that group i's slot lies in the i-th N-th of the
slot space: ``redis-cli --cluster create`` gives each master a contiguous
range, so the groups spread over the masters evenly.

Calls go straight to the node that serves the group's slot, on that node's
pooled connections (the same greeting and lazy ``FUNCTION LOAD`` as a
standalone partition, stores/redis.py), so a call to every group is sent to
every node before any reply is read. A ``MOVED`` reply, or a script told its
keys are no longer local (the slot moved), refreshes redis-py's slot map and
sends the call once more; ``ASK`` and ``TRYAGAIN`` (a slot being migrated)
fail the call, which the policy turns into a miss, a skipped write or a
fence. A dead master fails the group's calls until the cluster promotes its
replica and the slot map says so; the promoted replica's greeting finds a new
run_id and drops the group's tagged entries (what the old master acknowledged
may not have been replicated).
"""

from __future__ import annotations

import os
import threading
import time
from functools import lru_cache
from typing import Any

from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..hooks import lock_horizon_ms
from ..options import parse_cluster_url
from . import lua
from .base import Done
from .redis import RedisCall, RedisStore, _same

SLOTS = 16384
# Refresh the slot map at most this often after failures (a dead master fails
# every call until its replica is promoted).
REFRESH_INTERVAL = 0.1

_clients: dict[tuple, RedisCluster] = {}
_clients_lock = threading.Lock()


@lru_cache(maxsize=1024)
def group_hashtag(group: int, groups: int) -> str:
    """The hashtag of slot group `group` of `groups`: its slot is in the group's share."""
    low, high = group * SLOTS // groups, (group + 1) * SLOTS // groups
    salt = 0
    while not low <= key_slot(f"tc{group}.{salt}".encode()) < max(high, low + 1):
        salt += 1
    return f"tc{group}.{salt}"


def _client(seeds: str, options: dict[str, Any]) -> RedisCluster:
    timeouts = (options.get("SOCKET_TIMEOUT"), options.get("SOCKET_CONNECT_TIMEOUT"))
    key = (seeds, timeouts, options.get("PASSWORD"), options.get("USERNAME"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _connect(seeds, options)
        return client


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


def _refresh(client: RedisCluster) -> None:
    """Ask the cluster for its slot map again (not more often than REFRESH_INTERVAL)."""
    with client._tiercache_lock:  # type: ignore[attr-defined]
        if time.monotonic() - client._tiercache_refreshed < REFRESH_INTERVAL:  # type: ignore[attr-defined]
            return
        client._tiercache_refreshed = time.monotonic()  # type: ignore[attr-defined]
    try:
        client.nodes_manager.initialize()
    except Exception:  # noqa: BLE001, S110 - the next call fails and reports it
        pass


def _moved(error: ResponseError) -> bool:
    return "non local key" in str(error)


class ClusterCall:
    """A RedisCall to the node serving a group's slot, sent once more after a MOVED."""

    __slots__ = ("_store", "_args", "_convert", "_call")

    def __init__(self, store: ClusterStore, args: tuple, convert: Any):
        self._store, self._args, self._convert = store, args, convert
        self._call = store.start(args, convert)

    def result(self) -> Any:
        try:
            return self._call.result()
        except MovedError as error:  # the slot's new master is named: no need to ask
            self._store.client.nodes_manager.move_slot(error)
            return self._store.start(self._args, self._convert).result()
        except ResponseError as error:
            if not _moved(error):
                raise
            # A script found its keys gone (the slot moved, or is moving: then
            # asking again does not help, and the refresh is rate-limited).
            _refresh(self._store.client)
            return self._store.start(self._args, self._convert).result()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            _refresh(self._store.client)  # the master may be gone: look again next time
            raise


class ClusterStore(RedisStore):
    """One slot group of a Redis Cluster (see the module docstring)."""

    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        base, _, fragment = url.partition("#")
        group, _, groups = fragment.partition("/")
        self.url, self.base_ns = url, ns
        self.hashtag = group_hashtag(int(group or 0), int(groups or 1))
        self.slot = key_slot(self.hashtag.encode())
        self.ns = f"{ns}{{{self.hashtag}}}:"
        self.key_prefix = f"{{{self.hashtag}}}"
        self._seeds, self._options = base, options
        self._client: RedisCluster | None = None
        # No L1 in front of a cluster: its announcements are plain PUBLISHes,
        # which every node would relay to every other.
        self.channel = None
        # No idle connections kept either (RedisStore keeps some per store): the
        # master serving the slot, and so the pool, can change between calls.
        self._idle_max, self._idle, self._idle_pid = 0, [], os.getpid()

    def take(self) -> Any:
        pool = self.pool
        conn = pool.get_connection()
        conn._tiercache_pool = pool  # where give_back returns it, whoever serves the slot now
        return conn

    def give_back(self, conn: Any) -> None:
        conn._tiercache_pool.release(conn)

    def close(self) -> None:
        pass  # no idle connections to give back; the pools are the cluster client's

    @property
    def client(self) -> RedisCluster:
        """redis-py's RedisCluster, built at the first call (the cluster may be down at startup)."""
        if self._client is None:
            self._client = _client(self._seeds, self._options)
        return self._client

    @property
    def horizon(self) -> int:
        return lock_horizon_ms(self.base_ns)

    @property
    def pool(self) -> Any:
        """The connection pool of the master now serving the group's slot."""
        return self._master().connection_pool

    def _master(self) -> Any:
        """A redis-py client of the master now serving the group's slot."""
        node = self.client.nodes_manager.get_node_from_slot(self.slot)
        return self.client.get_redis_connection(node)

    def server_client(self) -> Any:
        return self._master()

    def placement(self) -> dict[str, Any]:
        node = self.client.nodes_manager.get_node_from_slot(self.slot)
        return {"role": "cluster master", "address": node.name, "slot": self.slot}

    def node_addresses(self) -> list[str]:
        """The "host:port" of every node in redis-py's slot map (statistics)."""
        return list(self.client.nodes_manager.nodes_cache)

    def node_client(self, address: str) -> Any:
        """A redis-py client of the node at "host:port", a replica or a master without
        slots included (statistics; the latter's are kept beside the slot map's)."""
        client = self.client
        node = client.get_node(node_name=address)
        if node is None:
            with client._tiercache_lock:  # type: ignore[attr-defined]
                others = client.__dict__.setdefault("_tiercache_other_nodes", {})
                host, _, port = address.rpartition(":")
                node = others.setdefault(address, ClusterNode(host, int(port)))
        if node.redis_connection is None:
            client.nodes_manager.create_redis_connections([node])
        return node.redis_connection

    def start(self, args: tuple, convert: Any) -> RedisCall:
        return RedisCall(self, args, convert)

    def _call(self, function, keys, args, convert=_same):
        if function is None:  # a plain command, e.g. ["SET", key, ...], keys already in the slot
            return self._send((*keys, *args), convert)
        keys = [self.key_prefix + key for key in keys]
        name = lua.function_name(function)
        return self._send(("FCALL", name, len(keys), *keys, self.ns, *args), convert)

    def _send(self, command: tuple, convert: Any) -> Any:
        try:
            return ClusterCall(self, command, convert)
        except SlotNotCoveredError as exc:  # no master serves the slot now: unreachable
            return Done(error=RedisConnectionError(str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported by result()
            return Done(error=exc)

    def release(self, name, owner):
        key = f"{self.ns}sf:{name}"  # already in the group's slot
        return self._send(("FCALL", lua.function_name("release"), 1, key, self.ns, owner), _same)

    def scan_keys(self, pattern: str, count: int) -> Any:
        """The group's keys matching a Redis glob pattern, without the group's hashtag."""
        server = self._master()
        escaped = "".join("\\" + c if c in "*?[]\\{}" else c for c in self.key_prefix)
        cut = len(self.key_prefix)
        for key in server.scan_iter(match=escaped + pattern, count=count):
            yield key.decode()[cut:]

    def clear(self):
        """Delete every key in the group's slot but the meta hashes (the guarantee's memory)."""
        try:
            server = self._master()
            keep = f":_tc:{{{self.hashtag}}}:meta".encode()
            for _ in range(10_000):
                keys = server.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
                doomed = [k for k in keys if not k.endswith(keep)]
                if not doomed:
                    break
                server.delete(*doomed)
            return Done(1)
        except Exception as exc:  # noqa: BLE001 - reported by result()
            return Done(error=exc)
