"""A partition on a Redis server, through django-redis' connection pools."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

from django_redis.pool import ConnectionFactory, get_connection_factory
from redis.asyncio import ConnectionPool
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError

try:
    from hiredis import pack_command as hiredis_pack
except ImportError:  # the optional extra: redis-py's own packing then
    hiredis_pack = None  # type: ignore[assignment]

from ..bridge import in_bridge
from ..hooks import kept_on_clear
from . import lua
from .async_pools import BridgedConnection, LoopPool, async_options, options_key, pool_for
from .base import Done, Store, Write
from .plain_reads import Unchecked, checked_reply, hints_for, plain_command, split_header

# Idle connections a store (one per backend instance, so per thread) keeps at
# most, and never more than this share of its pool's max_connections (redis-py's
# default of 100 allows 6; a pool of fewer than 16 is always used directly).
IDLE_CONNECTIONS = 8
IDLE_SHARE = 16
# An idle connection given back less than this many seconds ago is taken
# without asking the kernel whether its server closed it (a syscall of about
# 1 µs, a few per cent of a call). A server restarted within that window costs
# the next call on that connection an error (a miss, or a fence), never a read
# from an ungreeted server: a new server means a new socket, which is greeted.
RECHECK_AFTER = 0.01


UTF8 = ("utf-8", "strict")  # redis-py's default encoder, the one hiredis packs as


def send(conn: Any, args: tuple) -> None:
    """conn.send_command(*args), packed by hiredis itself where it can be (pack)."""
    if isinstance(conn, BridgedConnection):  # a coroutine's: its own packing
        conn.send_command(*args)
        return
    conn.send_packed_command(pack(conn, args))


def pack(conn: Any, args: tuple) -> list[bytes]:
    """conn.pack_command(*args), by hiredis itself where it can: redis-py's packer
    encodes every argument in Python first (12 µs for a tagged write's 18
    arguments here, against 1.4; 7 against 0.9 for a lock). Anything hiredis does
    not take (a bytearray, a memoryview, a bool) goes through redis-py, which
    converts it or says why not, as does a connection with an encoding other
    than UTF-8."""
    encoder = conn.encoder
    if hiredis_pack is not None and (encoder.encoding, encoder.encoding_errors) == UTF8:
        try:
            return [hiredis_pack(args)]
        except TypeError:
            pass
    return conn.pack_command(*args)


def _held(reply: list) -> list[bool]:
    """A claim's reply: 1 or 0 per name."""
    return [bool(x) for x in reply]


def _same(value: Any) -> Any:
    return value


def _one(value: Any) -> list:
    return [value]


def _missing_function(error: ResponseError) -> bool:
    # The server restarted (functions are not persisted here) or never had them.
    return "function not found" in str(error).lower()


class RedisCall:
    """One command sent on a pooled connection; the reply is read by result().

    The first command of a namespace on every connection (a new connection, or
    one that reconnected) is preceded by the ``hello`` function, pipelined in
    the same round trip, so that a server that restarted, was restored from
    older data or was replaced is noticed before anything is read from it.
    """

    __slots__ = ("_store", "_conn", "_args", "_convert", "_error", "_greeting")

    def __init__(self, store: RedisStore, args: tuple, convert: Callable):
        self._store, self._args, self._convert = store, args, convert
        self._conn: Any = None
        self._error: BaseException | None = None
        self._greeting = False
        try:
            self._conn = store.take()
            self._send()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._drop(exc)

    def _send(self) -> None:
        conn, ns = self._conn, self._store.ns
        greeted = conn.__dict__.get("_tiercache_greeted")
        if greeted is None:
            greeted = conn._tiercache_greeted = _Greeted()
            conn.register_connect_callback(greeted.forget)
        stamp = self._store.greeting_stamp()
        self._greeting = conn._sock is None or greeted.get(ns, _NEVER) != stamp
        if self._greeting:
            # Sending connects if needed, which empties `greeted` first.
            send(conn, self._store.hello_command())
            greeted[ns] = stamp
        self._send_own(conn)

    def _send_own(self, conn: Any) -> None:
        send(conn, self._args)

    def _read_own(self, conn: Any) -> Any:
        return conn.read_response()

    def _drop(self, exc: BaseException) -> None:
        # After a failure mid-reply the connection's state is unknown: never reuse it.
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._store.drop(conn)
        self._error = exc

    def _read(self) -> Any:
        greeting_error = None
        if self._greeting:
            try:
                self._conn.read_response()
            except ResponseError as error:
                greeting_error = error
                self._conn._tiercache_greeted.pop(self._store.ns, None)
        reply = self._read_own(self._conn)  # the call's own error, if any, wins
        if greeting_error is not None:
            raise GreetingFailed(f"the greeting failed: {greeting_error}")
        return reply

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        conn = self._conn
        try:
            try:
                reply = self._read()
            except ResponseError as error:
                if not _missing_function(error):
                    raise
                _load_library(conn, self._store.library)
                if isinstance(error, GreetingFailed):
                    raise  # the call itself ran (a plain command): sent again, it would run twice
                self._send()
                reply = self._read()
        except ResponseError:  # an error reply leaves the connection in a clean state
            self._release()
            raise
        except BaseException as exc:
            self._drop(exc)
            raise
        self._release()
        return self._convert(reply)

    def _release(self) -> None:
        self._store.give_back(self._conn)
        self._conn = None


class Pipelined(RedisCall):
    """A plain command and Packed ones behind it (plain_reads.py), sent together
    (one round trip); the reply is the list of their replies. Every reply is
    read before an error one is raised, so that the connection is left clean."""

    __slots__ = ()

    def _send_own(self, conn: Any) -> None:
        first, packed = self._args
        if isinstance(conn, BridgedConnection):  # a coroutine's: one command at a time
            for command in (first, *packed.commands):
                conn.send_command(*command)
            return
        # One buffer, one system call: redis-py would send a list piecemeal, and
        # the commands behind the first are packed once per tag list.
        data = b"".join([*pack(conn, first), packed.data])
        conn.send_packed_command([data], check_health=False)

    def _read_own(self, conn: Any) -> Any:
        replies, error = [], None
        behind = len(self._args[1].commands)
        if isinstance(conn, BridgedConnection):
            read = conn.read_response
        else:
            # The replies behind the first come in the same packet, most often:
            # read from the parser itself, without the connection's wrapping of
            # each read (a socket error still drops the connection: result()).
            read = conn._parser.read_response
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:
            error = exc
        for _ in range(behind):
            try:
                reply = read()
            except ResponseError as exc:
                reply = exc
            if isinstance(reply, ResponseError):
                error = error or reply
            replies.append(reply)
        if error is not None:
            raise error
        return replies


class PlainRead:
    """A read sent as one MGET and the HMGETs of the tokens it needs
    (stores/plain_reads.py); what it cannot check is read again through the Function."""

    __slots__ = ("_store", "_keys", "_leased", "_slots", "_call")

    def __init__(self, store: RedisStore, keys: list[str], leased: bool, mget, buckets, slots):
        self._store, self._keys, self._leased, self._slots = store, keys, leased, slots
        # Untagged entries alone: the MGET, sent as any single command is.
        if buckets is None:
            self._call = RedisCall(store, mget, _one)
        else:
            self._call = Pipelined(store, (mget, buckets), _same)

    def result(self) -> tuple[int, list]:
        store = self._store
        try:
            replies = self._call.result()
            return checked_reply(
                store.hints.lease_ms, self._keys, self._slots, self._leased, replies
            )
        except (Unchecked, GreetingFailed):
            # GreetingFailed: a server without the library (it restarted), now
            # loaded; what the MGET read there was never vouched for by ``hello``.
            return store.function_read(self._keys, self._leased).result()


class GreetingFailed(ResponseError):
    """The greeting sent before a call failed while the call itself ran: sending
    the call again could run it twice, so it fails (the next call greets again)."""


_NEVER = object()


class _Greeted(dict):
    """The namespaces greeted on one connection's current socket, each with the
    store's greeting_stamp() when it was greeted."""

    def forget(self, conn: Any) -> None:
        # redis-py calls this on every (re)connect: a new socket may reach a
        # new server, so every namespace is greeted again.
        self.clear()


def _load_library(conn: Any, library: str) -> None:
    conn.send_command("FUNCTION", "LOAD", library)
    try:
        conn.read_response()
    except ResponseError as error:
        if "already exists" not in str(error):  # another process loaded it first
            raise


class RedisStore(Store):
    """A partition on one Redis server.

    Calls take their connection from a short list of idle ones this store keeps
    in front of redis-py's pool: taking one from the pool and giving it back
    costs about as much client CPU as the round trip itself (locks, pid checks,
    events and metrics on both ways), and a RedisCall only ever gives back a
    connection whose reply it read whole. A pool with a small max_connections
    is used (nearly) directly, so that idle lists never hold the connections its
    limit means for others.
    """

    library = lua.LIBRARY  # what FUNCTION LOAD sends to a server that lacks it
    native_async = True
    # Reads of entries whose tags are known are one MGET, and an HMGET per bucket of
    # their tokens pipelined behind it (stores/plain_reads.py).
    plain_reads = True

    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        super().__init__(url, ns, options)
        self.client = self._connect(url, options)
        self.pool = self.client.connection_pool
        self._async_options = async_options(options)
        self._async_key = options_key(url, self._async_options)
        self.channel = f"{ns}l1"  # where this namespace's changes are published (lua.py)
        self.hints = hints_for(url, ns, int(options.get("TAG_LEASE", 3.0) * 1000))
        limit = getattr(self.pool, "max_connections", None) or 0
        self._idle_max = min(IDLE_CONNECTIONS, limit // IDLE_SHARE)
        self._idle: list[Any] = []
        self._releasing: list[Any] = []  # the connection releases go on (unlock_later)
        self._idle_pid = os.getpid()
        # A thread's backend instance dies with its thread; its connections go back.
        for kept in (self._idle, self._releasing):
            weakref.finalize(self, _give_all_back, self.pool, kept, self._idle_pid, _ignore)

    def take(self) -> Any:
        """A connection for one call: an idle one of this store's, else the pool's
        (for a coroutine, bridge.py: a redis.asyncio one of the running loop's)."""
        if in_bridge():
            return BridgedConnection.take(self.loop_pool())
        idle = self._idle
        if idle:
            if self._idle_pid == os.getpid():
                try:
                    conn = idle.pop()  # atomic: two threads never get the same one
                except IndexError:
                    pass
                else:
                    if monotonic() - conn._tiercache_idle_since < RECHECK_AFTER:
                        return conn
                    return _ready(conn)
            else:
                self._forked()
        return self.pool.get_connection()

    def loop_pool(self) -> LoopPool:
        """The redis.asyncio connections of the running loop (async_pools.py)."""
        wait = self._async_options["socket_timeout"] or 1.0  # for a free connection
        return pool_for(self._async_key, self._async_pool, wait)

    def _async_pool(self) -> Any:
        """A redis.asyncio pool of the partition's server (sentinel.py overrides it)."""
        return ConnectionPool.from_url(self.url, **self._async_options)

    def _forked(self) -> None:
        """In a forked child: the parent's sockets are not ours to use."""
        self._idle, self._releasing, self._idle_pid = [], [], os.getpid()

    def unlock_later(self, tags, writer):
        """Send the unlock now and read its reply at the next release (or when
        the store is closed): the caller waits for no round trip. A lock whose
        release fails expires by itself, so nobody needs the reply."""
        if self._idle_max == 0 or in_bridge():  # no list to park the connection in
            super().unlock_later(tags, writer)
            return
        self._send_later(self._command("unlock", [], [writer, *tags]))

    def release_later(self, names, owner):
        """release(), sent as unlock_later sends: a claim whose release fails
        expires by itself (CLAIM_TTL), and its waiters read what was stored."""
        if self._idle_max == 0 or in_bridge():
            super().release_later(names, owner)
            return
        self._send_later(self._command("release", [f"{self.ns}sf:{n}" for n in names], [owner]))

    def _send_later(self, command: tuple) -> None:
        """Send a release whose reply is read at the next one (or at close).

        Releases go on a connection of their own. The next call after a release
        is most often the next write's lock: on the same connection it would
        first wait for the release's reply, which may not have arrived yet; by
        the next release it has, and reading it costs no wait.
        """
        if self._idle_pid != os.getpid():
            self._forked()
        try:
            conn = self._releasing.pop()  # atomic: two threads never get the same one
        except IndexError:
            conn = self.pool.get_connection()
        else:
            _read_owed(conn, self.later_failed)
        try:
            send(conn, command)
        except BaseException:
            conn.disconnect()
            self.pool.release(conn)
            raise
        conn._tiercache_owed = conn.__dict__.get("_tiercache_owed", 0) + 1
        if self._releasing:  # another thread parked one meanwhile: keep one only
            _give_all_back(self.pool, [conn], self._idle_pid, self.later_failed)
        else:
            self._releasing.append(conn)

    def give_back(self, conn: Any) -> None:
        """Keep a connection whose reply was read whole for the next call, or
        return it to the pool."""
        if isinstance(conn, BridgedConnection):
            conn.give_back()
        elif len(self._idle) < self._idle_max and self._idle_pid == os.getpid():
            conn._tiercache_idle_since = monotonic()
            self._idle.append(conn)
        else:
            self.pool.release(conn)

    def drop(self, conn: Any) -> None:
        """A connection left in an unknown state by a failure: closed, never reused."""
        if isinstance(conn, BridgedConnection):
            conn.discard()
        else:
            conn.disconnect()
            self.pool.release(conn)

    def _connect(self, url: str, options: dict[str, Any]) -> Any:
        """The redis-py client whose pool the calls use (stores/sentinel.py overrides it)."""
        return connect(url, options)

    def hello_command(self) -> tuple:
        return ("FCALL", lua.function_name("hello"), 0, self.ns, fresh_epoch(), self.horizon)

    def greeting_stamp(self) -> Any:
        """What a connection's greeting of this namespace holds for: a socket greets
        again when it differs (stores/cluster.py). A server here is one socket's."""
        return None

    def _call(self, function: str | None, keys: list[str], args: list, convert=_same) -> RedisCall:
        return RedisCall(self, self._command(function, keys, args), convert)

    def _command(self, function: str | None, keys: list[str], args: list) -> tuple:
        if function is None:  # a plain command, e.g. ["DEL", key, ...]
            return (*keys, *args)
        name = lua.function_name(function)
        return ("FCALL", name, len(keys), *keys, self.ns, *args)

    def read(self, keys, leased, ttls=False):
        if ttls:
            return self._call("read", keys, ["1" if leased else "0", "1"], _read_reply_ttls)
        if not self.plain_reads:
            return self._call("read", keys, ["1" if leased else "0"], _read_reply)
        plain = plain_command(self.hints, self.ns, keys, leased)
        if plain is not None:
            return PlainRead(self, keys, leased, *plain)
        return self.function_read(keys, leased)

    def function_read(self, keys: list[str], leased: bool) -> RedisCall:
        """The read Function, whose answer teaches the hints each entry's tags and the lease."""
        hints, sent = self.hints, monotonic()

        def learned(reply: list) -> tuple[int, list]:
            hints.heard_lease(sent, reply[0])
            for key, value in zip(keys, reply[1:], strict=True):
                if type(value) is int:
                    continue  # unverified (no lease): its header was not sent
                tags = () if value is None or value[:1] != b"T" else _tags(value)
                if tags is not None:  # None: a header that does not parse
                    hints.learn(key, tags)
            return _read_reply(reply)

        return self._call("read", keys, ["1" if leased else "0"], learned)

    def write(self, writes: list[Write], nx, fresh, leased=False):
        args: list[Any] = [fresh, "1" if nx else "0", self.horizon, "1" if leased else "0"]
        if self.plain_reads:
            for w in writes:
                self.hints.learn(w.key, w.tags)
        for w in writes:
            args += ["" if w.ttl_ms is None else w.ttl_ms, len(w.tags), *w.tags]
            args += ["1", *w.snapshot] if w.snapshot is not None else ["0"]
            args.append(w.body)
        return self._call("write", [w.key for w in writes], args, list)

    def delete(self, keys):
        return self._call("delete", keys, [])

    def touch(self, key, ttl_ms):
        return self._call("touch", [key], ["" if ttl_ms is None else ttl_ms], bool)

    def incr(self, key, delta):
        return self._call("incr", [key], [delta], lambda r: None if r is None else int(r))

    def entry(self, key):
        return self._call("entry", [key], [], _entry)

    def snapshot(self, tags, ttl_ms, fresh, leased=False):
        ttl = "" if ttl_ms is None else ttl_ms
        return self._call(
            "snapshot",
            [],
            [fresh, ttl, self.horizon, "1" if leased else "0", *tags],
            lambda r: tuple(t.decode() for t in r) or None,
        )

    def drop_tags(self, tags):
        return self._call("drop_tags", [], list(tags))

    def lock(self, tags, writer, lock_ms):
        args = [fresh_epoch(), self.horizon, writer, lock_ms, *tags]
        return self._call("lock", [], args, _lock_reply)

    def unlock(self, tags, writer):
        return self._call("unlock", [], [writer, *tags])

    def record_fence(self, ids, lease_ms):
        return self._call("record_fence", [], [fresh_epoch(), self.horizon, lease_ms, *ids], list)

    def check_fence(self, id_, lease_ms):
        return self._call(
            "check_fence",
            [],
            [fresh_epoch(), self.horizon, id_, lease_ms],
            lambda r: (int(r[0]), r[1].decode()),
        )

    def lease_prepare(self, nonce, lease_ms, peer_ids):
        return self._call(
            "lease_prepare",
            [],
            [fresh_epoch(), self.horizon, nonce, lease_ms, *peer_ids],
            _prepared,
        )

    def lend_locks(self, id_, epoch):
        return self._call("lend_locks", [], [fresh_epoch(), self.horizon, id_, epoch], _lent)

    def adopt_locks(self, epoch, locks, margin_ms):
        pairs = [x for tag, held in locks.items() for x in (tag, _holders_text(held))]
        return self._call("adopt_locks", [], [epoch, margin_ms, self.horizon, *pairs], bool)

    def lease_activate(self, nonce, fenced, epochs):
        pairs = [x for item in epochs.items() for x in item]
        args = [nonce, str(int(fenced)), self.horizon, *pairs]
        return self._call("lease_activate", [], args, bool)

    def clear_fence(self, id_, count):
        return self._call("clear_fence", [], [id_, count])

    def clear(self):
        return self._call("clear", [], list(kept_on_clear()))

    def claim(self, names, owner, ttl_ms):
        keys = [f"{self.ns}sf:{name}" for name in names]
        return self._call("claim", keys, [owner, ttl_ms], _held)

    def release(self, names, owner):
        return self._call("release", [f"{self.ns}sf:{name}" for name in names], [owner])

    def server_client(self) -> Any:
        """A redis-py client of the server that holds the partition now (statistics)."""
        return self.client

    def structure(self, command, keys, args, kwargs):
        # Sent on redis-py's own client, which parses each command's reply; these
        # keys hold no entry, so the greeting (which guards tagged entries) is not needed.
        stored = [self.stored_key(key) for key in keys]
        try:
            if command == "replace_set":
                (members,) = args
                pipe = self.server_client().pipeline(transaction=True)
                pipe.delete(*stored)
                if members:
                    pipe.sadd(*stored, *members)
                pipe.execute()
                return Done(len(members))
            return Done(getattr(self.client, command)(*stored, *args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - reported by result()
            return Done(error=exc)

    def placement(self) -> dict[str, Any]:
        """Where the partition lives now, beyond its URL (statistics): {} on a plain server."""
        return {}

    def meta_key(self) -> str:
        """The namespace's meta hash (stores/lua.py); the statistics read its ``switches``."""
        return f"{self.ns}meta"

    def scan_keys(self, pattern: str, count: int) -> Any:
        """The keys matching a Redis glob pattern, as str (django-redis' keys and friends).

        SCAN sent as any call is (RedisCall), so that for a coroutine it runs on
        the loop's connections (adelete_pattern) like every other command. A
        server that restarted without the Functions fails the greeting sent with
        the first SCAN (and loads them): a SCAN only reads, so it is sent again,
        where a write is not (GreetingFailed)."""
        cursor: Any = 0
        while True:
            command = (["SCAN", cursor], ["MATCH", pattern, "COUNT", count])
            try:
                cursor, keys = self._call(None, *command).result()
            except GreetingFailed:
                cursor, keys = self._call(None, *command).result()
            yield from (key.decode() for key in keys)
            if int(cursor) == 0:
                return

    def disconnect(self) -> None:
        self.close()
        self.pool.disconnect(inuse_connections=False)

    def close(self):
        # Pools are shared by every thread's backend instance; keep them (as
        # django-redis does), but give back this instance's idle connections.
        for kept in (self._idle, self._releasing):
            _give_all_back(self.pool, kept, self._idle_pid, self.later_failed)


def connect(url: str, options: dict[str, Any]) -> Any:
    """A redis-py client of `url` made as a partition's is (same options, shared pools):
    a partition's own, or a replica's (OPTIONS["READ_REPLICAS"], raw_clients.py)."""
    factory = get_connection_factory(options=options)
    if type(factory) is ConnectionFactory:  # a project's own factory is left as it is
        factory = PoolPerOptions(options)
    return factory.connect(url)


class PoolPerOptions(ConnectionFactory):
    """django-redis' connection factory, with one pool per URL and per the options
    its connections are made with. django-redis keeps one pool per URL alone, so
    of two caches on one server with different SOCKET_TIMEOUTs (or credentials,
    or pool kwargs) the second would silently get the first one's pool."""

    _pools: dict[Any, Any] = {}
    _lock = threading.Lock()

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> Any:
        key = (
            tuple(sorted((name, repr(value)) for name, value in params.items())),
            self.pool_cls,
            repr(sorted(self.pool_cls_kwargs.items())),
        )
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = self.get_connection_pool(params)
            return pool


def _ready(conn: Any) -> Any:
    """An idle connection, reconnected if its server closed it meanwhile (as
    redis-py's pool checks too), so that a restarted server costs no error."""
    try:
        closed = conn.can_read()  # nothing is owed on an idle connection: data means EOF
    except (RedisError, OSError):
        closed = True
    if closed:
        conn.disconnect()  # the next send connects, and greets the server
    return conn


def _read_owed(conn: Any, failed: Callable[[BaseException], None]) -> None:
    """Read the replies of commands sent without waiting; a failure is reported, and
    a connection left in an unknown state is closed (the next send reconnects)."""
    owed, conn._tiercache_owed = conn._tiercache_owed, 0
    try:
        for _ in range(owed):
            try:
                conn.read_response()
            except ResponseError as error:  # e.g. an unlock on a server that restarted
                failed(error)
    except BaseException as error:  # noqa: BLE001 - reported; the connection starts afresh
        conn.disconnect()
        failed(error)


def _ignore(error: BaseException) -> None:
    pass  # a dying backend instance's unlock replies: the locks expire by themselves


def _give_all_back(
    pool: Any, idle: list, pid: int, failed: Callable[[BaseException], None]
) -> None:
    while idle and pid == os.getpid():
        try:
            conn = idle.pop()
        except IndexError:
            break
        if conn.__dict__.get("_tiercache_owed"):
            _read_owed(conn, failed)
        pool.release(conn)


def fresh_epoch() -> str:
    return os.urandom(8).hex()


def is_out_of_memory(error: BaseException | None) -> bool:
    """Did a full server (maxmemory with noeviction) refuse a write?"""
    return isinstance(error, OutOfMemoryError) or (
        isinstance(error, ResponseError) and "maxmemory" in str(error)
    )


def _read_reply(reply: list) -> tuple[int, list]:
    return reply[0], [_body(v) if type(v) is bytes and v[:1] == b"T" else v for v in reply[1:]]


def _read_reply_ttls(reply: list) -> tuple[int, list, list, list]:
    """READ's reply with each entry's PTTL after the values: (lease, bodies,
    pttls, the tags of each tagged entry), for the L1 tier."""
    n = (len(reply) - 1) // 2
    values = reply[1 : n + 1]
    bodies = [_body(v) if type(v) is bytes and v[:1] == b"T" else v for v in values]
    tags = [(_tags(v) or ()) if type(v) is bytes and v[:1] == b"T" else () for v in values]
    return reply[0], bodies, reply[n + 1 :], tags


def _tags(value: bytes) -> tuple[str, ...] | None:
    """The slots in a tagged value's header, as "#<slot>" (stores/slots.py):
    "n\\n" gen "\\n" (slot "\\n" token "\\n")*n; None when it does not parse."""
    split = split_header(value)
    if split is None:
        return None
    return tuple("#" + t.decode() for t in split[0].split(b"\n")[2:-1:2])


def _body(value: bytes) -> bytes:
    """Cut the tag header ("T" <length> ":" <header>) off a tagged value."""
    colon = value.index(b":", 1)
    return value[colon + 1 + int(value[1:colon]) :]


def _entry(reply):
    if reply is None:
        return None
    body, pttl, *tags = reply
    return body, pttl, tuple(t.decode() for t in tags)


def _lock_reply(reply: list) -> tuple[str, dict[str, str]]:
    """(this partition's epoch, {id: epoch} of the partitions that copied its locks lately)."""
    epoch, *copies = (x.decode() for x in reply)
    return epoch, dict(zip(copies[::2], copies[1::2], strict=True))


def _lent(reply: list) -> tuple[bool, dict[str, list[tuple[int, str]]]]:
    """(the lender is quiet itself, {tag: [(ms left, writer), ...]} of its locks)."""
    quiet, *pairs = reply
    locks = {}
    for tag, text in zip(pairs[::2], pairs[1::2], strict=True):
        items = text.decode().split()
        locks[tag.decode()] = [(int(ms), w) for ms, w in zip(items[::2], items[1::2], strict=True)]
    return bool(quiet), locks


def _holders_text(held: list[tuple[int, str]]) -> str:
    return " ".join(f"{ms} {writer}" for ms, writer in held)


def _prepared(reply: list) -> tuple[str, bool, list[str | None]]:
    """lease_prepare's answer: (epoch, quiet for lost memory alone, the peers' vouched epochs)."""
    epoch, lendable, *vouched = reply
    return epoch.decode(), bool(lendable), [None if e is None else e.decode() for e in vouched]
