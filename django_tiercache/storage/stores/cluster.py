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
standalone partition, stores/redis.py, but of the cluster variant of the
library, lua.CLUSTER_LIBRARY), so a call to every group is sent to every node
before any reply is read. They follow the slot as it moves or migrates
(``MOVED``, ``ASK``, ``TRYAGAIN``: stores/cluster_redirections.py).

The async API is native here too (storage/bridge.py): a call made for a
coroutine runs the same code, routed by the same slot map, on redis.asyncio
connections of the running loop (stores/cluster_nodes.py), so an entry
written by a thread is read by a coroutine and an invalidation made by either
is honoured by both.

A call that fails keeps the failure policy: a miss, a skipped write or a
fence. A dead master fails the group's calls until the cluster promotes its
replica and the slot map says so; the promoted replica's greeting finds a new
run_id and drops the group's tagged entries (what the old master acknowledged
may not have been replicated).

The group's L1 channel (``<ns>l1``) carries its hashtag: the Functions
SPUBLISH there, inside the group's shard, and coherence.py SSUBSCRIBEs on the
master serving the slot now (``channel_pool``). A master that gives the slot
up ends the subscription (``sunsubscribe``), which L1 takes as a lost
channel: the group's copies are flushed until the new master confirms.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from typing import Any

from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError, SlotNotCoveredError

from ..hooks import lock_horizon_ms
from . import lua
from .async_pools import LoopPool
from .base import Done
from .cluster_nodes import NodeConnections, refresh_slot_map, shared_client
from .cluster_redirections import TRYAGAIN_PAUSES, ClusterCall, declared, redirections, tagged
from .redis import RedisCall, RedisStore, _held, _same, fresh_epoch
from .slots import GEN_KEY

__all__ = ["SLOTS", "TRYAGAIN_PAUSES", "ClusterStore", "group_hashtag", "redirections"]

SLOTS = 16384

# Per group (its namespace): the master this process last sent it to, and how
# often that changed (greeting_stamp).
_homes: dict[str, tuple[str, int]] = {}
_homes_lock = threading.Lock()


def _home_round(ns: str, node: str) -> int:
    home = _homes.get(ns)
    if home is not None and home[0] == node:
        return home[1]
    with _homes_lock:
        home = _homes.get(ns)
        if home is None or home[0] != node:
            home = _homes[ns] = (node, 0 if home is None else home[1] + 1)
        return home[1]


@lru_cache(maxsize=1024)
def group_hashtag(group: int, groups: int) -> str:
    """The hashtag of slot group `group` of `groups`: its slot is in the group's share."""
    low, high = group * SLOTS // groups, (group + 1) * SLOTS // groups
    salt = 0
    while not low <= key_slot(f"tc{group}.{salt}".encode()) < max(high, low + 1):
        salt += 1
    return f"tc{group}.{salt}"


class ClusterStore(RedisStore):
    """One slot group of a Redis Cluster (see the module docstring)."""

    library = lua.CLUSTER_LIBRARY
    native_async = True  # a coroutine's calls: the same slot map, the loop's connections
    sharded_channel = True
    # An entry and its partition's tokens are in different slots: no one MGET reads both.
    plain_reads = False

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
        self._nodes = NodeConnections(base, options)
        # The group's changes are SPUBLISHed here, in the group's slot (lua.py).
        self.channel = f"{self.ns}l1"
        # No idle connections kept (RedisStore keeps some per store): the
        # master serving the slot, and so the pool, can change between calls.
        self._idle_max, self._idle, self._idle_pid = 0, [], os.getpid()

    def take(self) -> Any:
        return self._nodes.take(self.client, self._node())

    def take_on(self, node: ClusterNode) -> Any:
        """A connection to `node` (a master importing the slot, say)."""
        return self._nodes.take(self.client, node)

    def give_back(self, conn: Any) -> None:
        self._nodes.give_back(conn)

    def drop(self, conn: Any) -> None:
        self._nodes.drop(conn)

    def loop_pool(self, node: ClusterNode | None = None) -> LoopPool:
        """The running loop's connections to `node`, by default the group's master."""
        return self._nodes.loop_pool(node or self._node())

    def close(self) -> None:
        pass  # no idle connections to give back; the pools are the cluster client's

    def disconnect(self) -> None:
        pass  # the cluster client's pools follow its slot map: left to it

    @property
    def client(self) -> RedisCluster:
        """redis-py's RedisCluster, built at the first call (the cluster may be down at startup)."""
        if self._client is None:
            self._client = shared_client(self._seeds, self._options)
        return self._client

    @property
    def horizon(self) -> int:
        return lock_horizon_ms(self.base_ns)

    @property
    def pool(self) -> Any:
        """The connection pool of the master now serving the group's slot."""
        return self._master().connection_pool

    def channel_pool(self, failed: bool = False) -> Any:
        """Where to SSUBSCRIBE to the group's channel now (after a failure, the
        slot map is fetched again first: the slot may have moved)."""
        if failed:
            refresh_slot_map(self.client)
        return self.pool

    def _node(self) -> ClusterNode:
        """The master now serving the group's slot, as the slot map says."""
        return self.client.nodes_manager.get_node_from_slot(self.slot)

    def _master(self) -> Any:
        """A redis-py client of the master now serving the group's slot."""
        return self.client.get_redis_connection(self._node())

    def server_client(self) -> Any:
        return self._master()

    def stored_key(self, key: str) -> str:
        return self.key_prefix + key

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

    def hello_command(self) -> tuple:
        name = lua.cluster_function_name("hello")
        return ("FCALL", name, 1, self.ns + "meta", self.ns, fresh_epoch(), self.horizon)

    def greeting_stamp(self) -> int:
        """A socket kept open across a failover and back (the old master, demoted,
        keeps its clients' sockets; promoted again, it holds a copy of the other's
        data, which may lack its last writes) or across a slot moved away and back
        must greet the group again: the group's greetings hold for as long as this
        process sends it to the same master."""
        return _home_round(self.ns, self._node().name)

    def _call(self, function, keys, args, convert=_same):
        if function is None:  # a plain command, its key already in the slot
            return self._send((*keys, *args), convert, askable=True, changes=False)
        if keys:
            keys = [self.key_prefix + key for key in keys]
        else:
            keys = declared(self.ns, function, args)
        askable = function != "write" or not tagged(args)
        name = lua.cluster_function_name(function)
        command = ("FCALL", name, len(keys), *keys, self.ns, *args)
        return self._send(command, convert, askable, function not in lua.READ_ONLY)

    def _send(self, command: tuple, convert: Any, askable: bool, changes: bool) -> Any:
        try:
            return ClusterCall(self, command, convert, askable, changes)
        except SlotNotCoveredError as exc:  # no master serves the slot now: unreachable
            return Done(error=RedisConnectionError(str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported by result()
            return Done(error=exc)

    def record_fence(self, ids, lease_ms):
        """The fence, declaring the meta hash; and again declaring the generation too
        if the group adopted locks lately and must drop it (lua.py: record_fence).
        Declared always, the generation, absent after every fence and greeting until
        the next fill, would make every fence recorded on a migrating group fail."""
        first = super().record_fence(ids, lease_ms)
        keys = (self.ns + "meta", self.ns + GEN_KEY)
        args = (self.ns, fresh_epoch(), self.horizon, lease_ms, *ids)
        command = ("FCALL", lua.cluster_function_name("record_fence"), 2, *keys, *args)
        return _FenceDeclaringGeneration(first, lambda: self._send(command, list, True, True))

    def claim(self, names, owner, ttl_ms):
        keys = [f"{self.ns}sf:{name}" for name in names]  # already in the group's slot
        name_ = lua.cluster_function_name("claim")
        command = ("FCALL", name_, len(keys), *keys, self.ns, owner, ttl_ms)
        return self._send(command, _held, True, False)

    def release(self, names, owner):
        keys = [f"{self.ns}sf:{name}" for name in names]  # already in the group's slot
        name_ = lua.cluster_function_name("release")
        return self._send(("FCALL", name_, len(keys), *keys, self.ns, owner), _same, True, False)

    def announce_on_source(self) -> None:
        """Tell the group's subscribers, still on the master our slot map names,
        that anything may change: a change is about to be made on the master
        importing the slot, whose shard they do not listen to yet.

        Sent before the change, and the change is not made if it fails: once
        told, a process keeps no copy of what it reads from the importing master
        (``elsewhere_at``), so nothing it holds can miss the change, and the
        source's answers to its MAX_LAG pings still prove what they claim.
        """
        try:
            self.command_on_master("SPUBLISH", self.channel, "*")
        except RedisError:
            redirections.count("announce_failed")
            raise

    def command_on_master(self, *args: Any) -> Any:
        """A plain command on the master the slot map names (on the loop's connections
        for a coroutine): its raw reply."""
        return self._nodes.command(self.client, self._node(), *args)

    def scan_keys(self, pattern: str, count: int) -> Any:
        """The group's keys matching a Redis glob pattern, without the group's hashtag."""
        escaped = "".join("\\" + c if c in "*?[]\\{}" else c for c in self.key_prefix)
        cut, cursor = len(self.key_prefix), b"0"
        while True:
            cursor, keys = self.command_on_master(
                "SCAN", cursor, "MATCH", escaped + pattern, "COUNT", count
            )
            yield from (key.decode()[cut:] for key in keys)
            if int(cursor) == 0:
                return

    def clear(self):
        """Delete every key in the group's slot but the meta hashes (the guarantee's
        memory), then tell the group's L1 copies everywhere."""
        try:
            keep = f":_tc:{{{self.hashtag}}}:meta".encode()
            for _ in range(10_000):
                keys = self.command_on_master("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
                doomed = [k for k in keys if not k.endswith(keep)]
                if not doomed:
                    break
                self.command_on_master("DEL", *doomed)
            self.command_on_master("SPUBLISH", self.channel, "*")
            return Done(1)
        except Exception as exc:  # noqa: BLE001 - reported by result()
            return Done(error=exc)


class _FenceDeclaringGeneration:
    """record_fence, sent again declaring the generation if the first call says so."""

    __slots__ = ("_first", "_again")

    def __init__(self, first: Any, again: Any):
        self._first, self._again = first, again

    def result(self) -> Any:
        try:
            return self._first.result()
        except ResponseError as error:
            if not str(error).startswith("GENUNDECLARED"):
                raise
        return self._again().result()
