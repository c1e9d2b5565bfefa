"""The journal's server, and the replicas that must confirm a change before it counts.

The journal's Redis is named by a URL the cache's own parser reads
(storage/options.py): ``redis://``, ``rediss://``, ``unix://``, a
Sentinel-managed primary (``redis+sentinel://``) or a Redis Cluster
(``redis+cluster://``). Sentinel and Cluster clients are the cache stores'
own (one per process, location and timeouts; stores/sentinel.py, cluster.py):

- Sentinel: redis-py's ``master_for`` client. Every new connection asks the
  sentinels where the primary is, so after a failover the journal is found on
  the promoted replica by itself.
- Cluster: every journal key carries the hash tag ``{KEY_PREFIX}``, so the
  journal sits in one slot, on one master. Calls go to that master's own
  client (a script and the WAIT after it must share one connection, which
  RedisCluster does not promise); a moved slot or a dead master refreshes
  the slot map and the call fails as an unreachable journal, so the next call
  finds the new master.

Replication is asynchronous: a primary that dies right after acknowledging a
change takes it along if no replica has it yet. So a change whose loss would
lose a write (an enqueue a caller is told succeeded) is followed, on the same
connection, by ``WAIT REPLICAS timeout``: the number of replicas that hold
everything this connection wrote. Fewer than REPLICAS raise NotReplicated, a
ConnectionError: to its callers the journal was unreachable (the change itself
stands on the primary; see api.py and drain.py for what happens to it).

While no replica confirms (it is down, or a failover left none), each WAIT
costs REPLICA_TIMEOUT. A caller that would rather not wait then (an enqueue:
a save is waiting) runs ``patient=False``: for RECHECK_REPLICAS seconds after
a WAIT that was not confirmed, its change is made without a WAIT and raises
NotReplicated at once, exactly as a timed-out WAIT would; the first such
change after that waits again, to see whether a replica is back. A drain's
ACK always waits (nothing is waiting on it), and one that is confirmed ends
the wait-free time at once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from time import monotonic
from typing import Any, TypeVar

import redis
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..storage.failures import CircuitBreaker
from ..storage.options import CLUSTER_SCHEME, SENTINEL_SCHEME
from ..storage.stores import cluster, sentinel

T = TypeVar("T")

# The journal's socket timeout is WRITE_BEHIND["SOCKET_TIMEOUT"] (the cache's by
# default). REPLICA_TIMEOUT must stay below it (a WAIT that outlived the socket
# would read as a dead server, and redis-py would send the pipeline again).
# A hung journal costs one timeout, then its breaker answers at once for a
# cool-down (storage/failures.py's breaker: a timeout opens it at once).
BREAKER_FAILURES = 3

# Schemes whose servers have replicas by design: REPLICAS defaults to 1 there.
REPLICATED_SCHEMES = (SENTINEL_SCHEME, CLUSTER_SCHEME)
# Schemes that can hold a journal (memory:// cannot: it is one process's memory).
JOURNAL_SCHEMES = ("redis", "rediss", "unix", *REPLICATED_SCHEMES)

# Seconds after an unconfirmed WAIT during which changes do not wait (see above).
RECHECK_REPLICAS = 1.0

_plain_clients: dict[tuple[str, float], redis.Redis] = {}
_plain_lock = threading.Lock()


class NotReplicated(RedisConnectionError):
    """Fewer than REPLICAS replicas confirmed a journal change within REPLICA_TIMEOUT.

    The change stands on the primary; `reply` is what its script answered.
    """

    def __init__(self, confirmed: int, wanted: int, timeout: float, reply: Any, waited=True):
        super().__init__(
            f"{confirmed} of {wanted} replica(s) confirmed the journal change within {timeout:g} s"
            if waited
            else f"no replica confirmed the journal's changes lately (a WAIT of {timeout:g} s "
            f"timed out less than {RECHECK_REPLICAS:g} s ago), so this one was not waited for"
        )
        self.reply = reply


def scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def default_replicas(url: str) -> int:
    """REPLICAS when the setting leaves it None: 1 on Sentinel and Cluster, 0 on plain Redis."""
    return 1 if scheme(url) in REPLICATED_SCHEMES else 0


class Server:
    """A plain Redis (or a Sentinel-managed primary, through its client) holding the journal."""

    def __init__(self, client: Any, replicas: int, replica_timeout: float, cooldown: float = 5.0):
        self._client = client
        self.replicas, self.replica_timeout = replicas, replica_timeout
        self.unconfirmed_at: float | None = None  # monotonic() of the last unconfirmed WAIT
        self.breaker = CircuitBreaker(BREAKER_FAILURES, cooldown)

    @property
    def scripting_client(self) -> Any:
        """The client scripts are registered with (for its encoder; calls name their client)."""
        return self._client

    def client(self) -> redis.Redis:
        """The client of the server holding the journal now."""
        return self._client

    def call(self, work: Callable[[redis.Redis], T]) -> T:
        """work(client): its errors are the journal's; none at all while the breaker is open."""
        if not self.breaker.acquire():
            raise JournalDown("write-behind journal unreachable lately (breaker open)")
        try:
            result = self._call(work)
        except NotReplicated:
            self.breaker.succeeded()  # the server answered; its replicas did not
            raise
        except RedisTimeoutError:
            self.breaker.failed(timed_out=True)
            raise
        except RedisConnectionError:
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return result

    def _call(self, work: Callable[[redis.Redis], T]) -> T:
        return work(self.client())

    def run(
        self, script: Script, keys: list, args: list, replicated: bool = False, patient=True
    ) -> Any:
        """Run `script`; with `replicated`, WAIT for REPLICAS replicas after it
        (NotReplicated); not `patient`, no WAIT while they were missing lately."""
        if not replicated or not self.replicas:
            return self.call(lambda client: script(keys, args, client=client))
        if not patient and self._unconfirmed_lately():
            return self.call(lambda client: self._run_unwaited(client, script, keys, args))
        return self.call(lambda client: self._run_and_wait(client, script, keys, args, patient))

    def _unconfirmed_lately(self) -> bool:
        since = self.unconfirmed_at
        return since is not None and monotonic() - since < RECHECK_REPLICAS

    def _run_unwaited(self, client: redis.Redis, script: Script, keys: list, args: list) -> Any:
        """Run `script` and raise NotReplicated at once, as a timed-out WAIT would."""
        reply = script(keys, args, client=client)
        raise NotReplicated(0, self.replicas, self.replica_timeout, reply, waited=False)

    def _run_and_wait(
        self, client: redis.Redis, script: Script, keys: list, args: list, patient: bool
    ) -> Any:
        # One pipeline, so one connection: WAIT counts the replicas holding what
        # *this connection* wrote, and one round trip carries both commands.
        wait_ms = max(1, math.ceil(self.replica_timeout * 1000))  # WAIT n 0 would block forever
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", self.replicas, wait_ms)
            reply, confirmed = pipe.execute(raise_on_error=False)
            if not isinstance(reply, NoScriptError):
                break
            script.sha = client.script_load(script.script)  # a new primary, say
            if not patient and type(confirmed) is int and confirmed < self.replicas:
                # That WAIT, after a script that did nothing, already timed out:
                # not a second one (a new primary without replicas would cost two).
                self.unconfirmed_at = monotonic()
                return self._run_unwaited(client, script, keys, args)
        for result in (reply, confirmed):
            if isinstance(result, Exception):
                raise result
        if int(confirmed) < self.replicas:
            self.unconfirmed_at = monotonic()
            raise NotReplicated(int(confirmed), self.replicas, self.replica_timeout, reply)
        self.unconfirmed_at = None
        return reply


class ClusterServer(Server):
    """The master of a Redis Cluster serving the journal's slot (the slot of `hashtag`)."""

    # Failures that mean "the slot map is out of date or the master is gone".
    NODE_ERRORS = (
        RedisConnectionError,
        RedisTimeoutError,
        AskError,  # MovedError included
        TryAgainError,
        ClusterDownError,
        RedisClusterException,  # SlotNotCoveredError included
        OSError,
    )

    def __init__(
        self,
        cluster_client: Any,
        hashtag: str,
        replicas: int,
        replica_timeout: float,
        cooldown: float = 5.0,
    ):
        super().__init__(cluster_client, replicas, replica_timeout, cooldown)
        self.slot = key_slot(hashtag.encode())

    def client(self) -> redis.Redis:
        node = self._client.nodes_manager.get_node_from_slot(self.slot)
        return self._client.get_redis_connection(node)

    def _call(self, work: Callable[[redis.Redis], T]) -> T:
        try:
            return work(self.client())
        except NotReplicated:
            raise
        except self.NODE_ERRORS as exc:
            cluster.refresh_slot_map(self._client)  # the next call asks where the slot is
            if isinstance(exc, RedisConnectionError):
                raise
            raise RedisConnectionError(f"journal slot {self.slot} not served: {exc}") from exc


class JournalDown(RedisConnectionError):
    """The journal failed lately and its breaker is open: not tried now."""


def connect(
    url: str,
    hashtag: str,
    replicas: int,
    replica_timeout: float,
    socket_timeout: float = 1.0,
    cooldown: float = 5.0,
) -> Server:
    """The server `url` names (a JOURNAL_SCHEMES URL), for the journal under `hashtag`."""
    kind = scheme(url)
    options = {"SOCKET_TIMEOUT": socket_timeout, "SOCKET_CONNECT_TIMEOUT": socket_timeout}
    if kind == SENTINEL_SCHEME:
        client = sentinel.shared_client(url, options)
        return Server(client, replicas, replica_timeout, cooldown)
    if kind == CLUSTER_SCHEME:
        seeds = cluster.shared_client(url.partition("#")[0], options)
        return ClusterServer(seeds, hashtag, replicas, replica_timeout, cooldown)
    with _plain_lock:
        plain = _plain_clients.get((url, socket_timeout))
        if plain is None:
            plain = _plain_clients[url, socket_timeout] = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
    return Server(plain, replicas, replica_timeout, cooldown)
