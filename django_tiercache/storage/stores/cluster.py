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
before any reply is read. A ``MOVED`` reply, or a script told its keys are no
longer local, refreshes redis-py's slot map and sends the call once more.

While a slot migrates, its keys are split between two masters: the source
answers ``ASK`` for a key it no longer holds, the importing target serves a
call preceded by ``ASKING``, and answers ``TRYAGAIN`` to a call on several
keys it does not all hold yet. That makes a call safe on the target only if
it declares every key whose absence it acts on (Redis checks declared keys;
a key a Function reaches undeclared would read as missing on the target while
it still sits on the source). So every Function call declares the keys of
the group it may create, delete or trust (``_declared``), which the
Functions themselves ignore; ``ASK`` is then followed (``ASKING`` and the call
on the target, as redis-py's RedisCluster does, without the greeting: a
target learns the group's ``run_id`` once the slot is its own) and
``TRYAGAIN`` retried a few times (``TRYAGAIN_PAUSES``) before the call fails.
A tagged write is the one call that creates keys it cannot declare (the tag
tokens and the generation it reads from its header); it is not sent to a
target and fails as a skipped write. A change made on the target is
announced on the target's shard while the group's subscribers still listen
on the source: the call first announces ``*`` for the group on the source,
and is not sent if that fails; what is read from the target is not kept in
L1 (``elsewhere_at``), since changes there are not announced where L1 hears.

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
import time
from functools import lru_cache
from typing import Any

from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..hooks import lock_horizon_ms
from ..options import parse_cluster_url
from . import lua
from .base import Done, SharedClients
from .redis import (
    GreetingFailed,
    RedisCall,
    RedisStore,
    _load_library,
    _missing_function,
    _same,
    fresh_epoch,
)

SLOTS = 16384
# Refresh the slot map at most this often after failures (a dead master fails
# every call until its replica is promoted).
REFRESH_INTERVAL = 0.1
# Pauses before sending again a call refused with TRYAGAIN (several keys of a
# slot being migrated, not all on the target yet); then the call fails.
TRYAGAIN_PAUSES = (0.01, 0.02, 0.05)
# Redirections (MOVED, ASK) one call follows at most.
MAX_REDIRECTIONS = 5

_clients = SharedClients()


@lru_cache(maxsize=1024)
def group_hashtag(group: int, groups: int) -> str:
    """The hashtag of slot group `group` of `groups`: its slot is in the group's share."""
    low, high = group * SLOTS // groups, (group + 1) * SLOTS // groups
    salt = 0
    while not low <= key_slot(f"tc{group}.{salt}".encode()) < max(high, low + 1):
        salt += 1
    return f"tc{group}.{salt}"


def shared_client(seeds: str, options: dict[str, Any]) -> RedisCluster:
    """The RedisCluster of these seeds and connection options, one per process."""
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


class Redirections:
    """How many redirections the cluster stores of this process followed (tests,
    diagnostics): moved, ask, tryagain, and announce_failed (the ``*`` on the
    source after a change on the target could not be sent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


redirections = Redirections()


def _declared(ns: str, function: str, args: list) -> list[str]:
    """The keys a Function that takes none (it reads its arguments) may create,
    delete or trust, declared to Redis so that a migration's ASK and TRYAGAIN
    rules cover them (see the module docstring). The Functions ignore them."""
    meta = ns + "meta"
    if function == "drop_tags":
        return [ns + "t:" + tag for tag in args]
    if function == "snapshot":  # fresh, ttl, horizon, leased, tag*
        return [meta, ns + "gen", *(ns + "t:" + tag for tag in args[4:])]
    if function == "lock":  # fresh, horizon, writer, lock_ms, tag*
        return [meta, *(ns + "t:" + tag for tag in args[4:])]
    if function == "unlock":  # writer, tag*
        return [meta, *(ns + "t:" + tag for tag in args[1:])]
    if function == "lease_activate":  # nonce, ...
        return [meta, ns + "gen", ns + "lease", ns + "lease:" + str(args[0])]
    return [meta]  # hello, fences, lease_prepare: the meta hash is what they stand on


def _tagged(args: list) -> bool:
    """Does WRITE's argument list (stores/redis.py) hold a tagged entry?"""
    a = 4  # fresh, nx, horizon, leased; then per entry: ttl, n, tag*n, snapshot, body
    while a < len(args):
        if int(args[a + 1]):
            return True
        a += 2
        a += 2 if args[a] == "1" else 1  # an untagged snapshot is the generation alone
        a += 1
    return False


class AskedCall:
    """A call sent with ASKING to the master importing the group's slot."""

    __slots__ = ("_store", "_node", "_args", "_convert")

    def __init__(self, store: ClusterStore, error: AskError, args: tuple, convert: Any):
        client = store.client
        node = client.get_node(host=error.host, port=error.port)
        if node is None:  # a master our slot map does not know yet
            refresh_slot_map(client)
            node = client.get_node(host=error.host, port=error.port)
            if node is None:
                raise error
        self._store, self._node, self._args, self._convert = store, node, args, convert

    def result(self) -> Any:
        pool = self._store.client.get_redis_connection(self._node).connection_pool
        conn = pool.get_connection()
        try:
            try:
                reply = self._send(conn)
            except ResponseError as error:
                if not _missing_function(error):
                    raise
                _load_library(conn, self._store.library)
                reply = self._send(conn)
        except ResponseError:  # the connection is in a clean state
            pool.release(conn)
            raise
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        pool.release(conn)
        return self._convert(reply)

    def _send(self, conn: Any) -> Any:
        conn.send_packed_command(conn.pack_commands([("ASKING",), self._args]))
        conn.read_response()
        return conn.read_response()


class ClusterCall:
    """A call to the node serving a group's slot, following MOVED, ASK and
    TRYAGAIN (see the module docstring)."""

    __slots__ = ("_store", "_args", "_convert", "_call", "_askable", "_changes")

    def __init__(
        self, store: ClusterStore, args: tuple, convert: Any, askable: bool, changes: bool
    ):
        self._store, self._args, self._convert = store, args, convert
        self._askable, self._changes = askable, changes
        self._call: Any = store.start(args, convert)

    def result(self) -> Any:
        store, call = self._store, self._call
        pauses, refreshed = list(TRYAGAIN_PAUSES), False
        for _ in range(MAX_REDIRECTIONS + len(TRYAGAIN_PAUSES)):
            try:
                reply = call.result()
            except MovedError as error:  # the slot's new master is named: no need to ask
                redirections.count("moved")
                store.client.nodes_manager.move_slot(error)
            except AskError as error:
                if not self._askable:
                    raise
                redirections.count("ask")
                # Before, not after: a change the source's subscribers were not
                # told of must not be made (see announce_on_source).
                if self._changes:
                    store.announce_on_source()
                store.elsewhere_at = time.monotonic()
                call = AskedCall(store, error, self._args, self._convert)
                continue
            except TryAgainError:
                if not pauses:
                    raise
                redirections.count("tryagain")
                time.sleep(pauses.pop(0))
            except GreetingFailed:
                raise
            except ResponseError as error:
                # A script found its keys gone: the slot moved (the refresh finds
                # it) or is moving (a key it reaches undeclared is on the target).
                if not _moved(error) or refreshed:
                    raise
                refreshed = True
                refresh_slot_map(store.client)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                refresh_slot_map(store.client)  # the master may be gone: look again next time
                raise
            else:
                return reply
            call = self._again()
        return call.result()

    def _again(self) -> Any:
        try:
            return self._store.start(self._args, self._convert)
        except SlotNotCoveredError as exc:  # no master serves the slot now: unreachable
            return Done(error=RedisConnectionError(str(exc)))


class ClusterStore(RedisStore):
    """One slot group of a Redis Cluster (see the module docstring)."""

    library = lua.CLUSTER_LIBRARY
    native_async = False  # calls follow the sync RedisCluster's slot map
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
        # The group's changes are SPUBLISHed here, in the group's slot (lua.py).
        self.channel = f"{self.ns}l1"
        # No idle connections kept (RedisStore keeps some per store): the
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

    def _master(self) -> Any:
        """A redis-py client of the master now serving the group's slot."""
        node = self.client.nodes_manager.get_node_from_slot(self.slot)
        return self.client.get_redis_connection(node)

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

    def _call(self, function, keys, args, convert=_same):
        if function is None:  # a plain command, its key already in the slot
            return self._send((*keys, *args), convert, askable=True, changes=False)
        if keys:
            keys = [self.key_prefix + key for key in keys]
        else:
            keys = _declared(self.ns, function, args)
        askable = function != "write" or not _tagged(args)
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

    def claim(self, name, owner, ttl_ms):
        key = f"{self.ns}sf:{name}"  # already in the group's slot
        name_ = lua.cluster_function_name("claim")
        return self._send(("FCALL", name_, 1, key, self.ns, owner, ttl_ms), bool, True, False)

    def release(self, name, owner):
        key = f"{self.ns}sf:{name}"  # already in the group's slot
        name_ = lua.cluster_function_name("release")
        return self._send(("FCALL", name_, 1, key, self.ns, owner), _same, True, False)

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
            self._master().execute_command("SPUBLISH", self.channel, "*")
        except RedisError:
            redirections.count("announce_failed")
            raise

    def scan_keys(self, pattern: str, count: int) -> Any:
        """The group's keys matching a Redis glob pattern, without the group's hashtag."""
        server = self._master()
        escaped = "".join("\\" + c if c in "*?[]\\{}" else c for c in self.key_prefix)
        cut = len(self.key_prefix)
        for key in server.scan_iter(match=escaped + pattern, count=count):
            yield key.decode()[cut:]

    def clear(self):
        """Delete every key in the group's slot but the meta hashes (the guarantee's
        memory), then tell the group's L1 copies everywhere."""
        try:
            server = self._master()
            keep = f":_tc:{{{self.hashtag}}}:meta".encode()
            for _ in range(10_000):
                keys = server.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 1000)
                doomed = [k for k in keys if not k.endswith(keep)]
                if not doomed:
                    break
                server.delete(*doomed)
            server.execute_command("SPUBLISH", self.channel, "*")
            return Done(1)
        except Exception as exc:  # noqa: BLE001 - reported by result()
            return Done(error=exc)
