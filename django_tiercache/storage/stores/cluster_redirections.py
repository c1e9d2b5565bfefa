"""Calls to a slot group that follow its slot as it moves: MOVED, ASK, TRYAGAIN.

A call goes to the master the slot map names for the group's slot. A
``MOVED`` reply names the slot's new master: the map is corrected and the
call sent again. A script told its keys are no longer local refreshes the
map and is sent once more.

While a slot migrates, its keys are split between two masters: the source
answers ``ASK`` for a key it no longer holds, the importing target serves a
call preceded by ``ASKING``, and answers ``TRYAGAIN`` to a call on several
keys it does not all hold yet. That makes a call safe on the target only if
it declares every key whose absence it acts on (Redis checks declared keys;
a key a Function reaches undeclared would read as missing on the target while
it still sits on the source). So every Function call declares the keys of
the group it may create, delete or trust (``declared``), which the
Functions themselves ignore; ``ASK`` is then followed (``ASKING`` and the call
on the target, without the greeting: a target learns the group's ``run_id``
once the slot is its own) and ``TRYAGAIN`` retried a few times
(``TRYAGAIN_PAUSES``) before the call fails. A tagged write is the one call
that creates keys it cannot declare (the slot table's buckets and the
generation it reads from its header); it is not sent to a target and fails as a skipped
write. A change made on the target is announced on the target's shard while
the group's subscribers still listen on the source: the call first announces
``*`` for the group on the source, and is not sent if that fails; what is
read from the target is not kept in L1 (``elsewhere_at``), since changes
there are not announced where L1 hears.

The same classes serve threads and coroutines: the connections come from the
store (stores/cluster_nodes.py), and the pauses before a TRYAGAIN is sent
again are ``bridge.pause``, an asyncio sleep for a coroutine.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from redis.exceptions import AskError, MovedError, ResponseError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..bridge import pause
from .base import Done
from .cluster_nodes import refresh_slot_map
from .redis import GreetingFailed, _load_library, _missing_function
from .slots import GEN_KEY, bucket_key

# Pauses before sending again a call refused with TRYAGAIN (several keys of a
# slot being migrated, not all on the target yet); then the call fails.
TRYAGAIN_PAUSES = (0.01, 0.02, 0.05)
# Redirections (MOVED, ASK) one call follows at most.
MAX_REDIRECTIONS = 5


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


def declared(ns: str, function: str, args: list) -> list[str]:
    """The keys a Function that takes none (it reads its arguments) may create,
    delete or trust, declared to Redis so that a migration's ASK and TRYAGAIN
    rules cover them (see the module docstring). The Functions ignore them."""
    meta, gen = ns + "meta", ns + GEN_KEY
    # Every key carries the group's hashtag (it is in ns): the slot table's
    # buckets live in the group's hash slot too.
    if function == "drop_tags":
        return _bucket_keys(ns, args)
    if function == "snapshot":  # fresh, ttl, horizon, leased, tag*
        return [meta, gen, *_bucket_keys(ns, args[4:])]
    if function == "lock":  # fresh, horizon, writer, lock_ms, tag*
        return [meta, *_bucket_keys(ns, args[4:])]
    if function == "unlock":  # writer, tag*
        return [meta, *_bucket_keys(ns, args[1:])]
    if function == "lease_activate":  # nonce, ...
        return [meta, gen, ns + "lease", ns + "lease:" + str(args[0])]
    return [meta]  # hello, fences, lease_prepare: the meta hash is what they stand on


def _bucket_keys(ns: str, tags: list) -> list[str]:
    """The buckets of the slot table (stores/slots.py) holding the tags' tokens."""
    return list(dict.fromkeys(bucket_key(ns, tag) for tag in tags))


def tagged(args: list) -> bool:
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

    def __init__(self, store: Any, error: AskError, args: tuple, convert: Any):
        client = store.client
        node = client.get_node(host=error.host, port=error.port)
        if node is None:  # a master our slot map does not know yet
            refresh_slot_map(client)
            node = client.get_node(host=error.host, port=error.port)
            if node is None:
                raise error
        self._store, self._node, self._args, self._convert = store, node, args, convert

    def result(self) -> Any:
        store = self._store
        conn = store.take_on(self._node)
        try:
            try:
                reply = self._send(conn)
            except ResponseError as error:
                if not _missing_function(error):
                    raise
                _load_library(conn, store.library)
                reply = self._send(conn)
        except ResponseError:  # both replies read: the connection is in a clean state
            store.give_back(conn)
            raise
        except BaseException:
            store.drop(conn)
            raise
        store.give_back(conn)
        return self._convert(reply)

    def _send(self, conn: Any) -> Any:
        conn.send_command("ASKING")
        conn.send_command(*self._args)
        refused = None
        try:
            conn.read_response()
        except ResponseError as error:
            refused = error
        reply = conn.read_response()
        if refused is not None:
            raise refused
        return reply


class ClusterCall:
    """A call to the node serving a group's slot, following MOVED, ASK and
    TRYAGAIN (see the module docstring)."""

    __slots__ = ("_store", "_args", "_convert", "_call", "_askable", "_changes")

    def __init__(self, store: Any, args: tuple, convert: Any, askable: bool, changes: bool):
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
                pause(pauses.pop(0))
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
