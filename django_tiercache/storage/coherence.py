"""Keeping every process's L1 copies coherent: one subscriber thread per partition.

Every Redis Function that changes what an entry reads as publishes a message
on its namespace's channel inside the same atomic call (stores/lua.py), so no
change can happen without its message. Each process subscribes once per
partition and applies what it hears to the L1 slots listening there.

The thread pings the server every ``PING_EVERY`` seconds, more often when an
L1 bounds its lag (``MAX_LAG``, a quarter of it): a ping's reply travels
behind every message published before the ping reached the server, so when it
comes back the slots know they are no more behind than its send time.

A subscription that drops (the connection is killed, the server restarts or
fails over, or pings go unanswered for ``DEAD_AFTER``) may have missed
messages: the slots are told at once (they flush and bypass L1), the thread
connects again with a short backoff, and the slots serve again only once the
server confirmed the new subscription. redis-py's own reconnect-and-resubscribe
is turned off on this connection, since it would hide the gap.

A slot group of a Redis Cluster (stores/cluster.py) announces on a sharded
channel: the thread SSUBSCRIBEs on the master serving the group's slot, asking
the store where that is at every (re)connect. A master that gives the slot up
(resharding, failover) ends the subscription with ``sunsubscribe``: that is a
lost channel like any other. redis-py's ClusterPubSub is not used, because it
moves subscriptions to the new master by itself, hiding the gap too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import socket
import ssl
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

try:
    import hiredis
except ImportError:  # the optional extra: redis-py's own reading then
    hiredis = None  # type: ignore[assignment]

from .l1 import L1, forget_all

logger = logging.getLogger("django_tiercache.l1")

PING_EVERY = 1.0  # seconds between pings on a quiet subscription
MIN_PING_EVERY = 0.005  # however small a MAX_LAG, pings no more often than this
DEAD_AFTER = 3.0  # seconds without any reply after which it is taken as lost
# Seconds an L1 hit waits for its subscriber to apply a message already on its
# socket before it reads Redis instead (Subscriber.catch_up).
CATCH_UP = 0.001
RECONNECT_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0)

_subscribers: dict[tuple, Subscriber] = {}
_subscribers_lock = threading.Lock()


class Subscriber:
    """A daemon thread listening on one partition's channel for its L1 slots."""

    def __init__(
        self, locate: Callable[[bool], Any], channel: str, sharded: bool = False, cut: int = 0
    ):
        # locate(failed) -> the connection pool of the server to listen on now.
        self.locate, self.channel, self.sharded = locate, channel, sharded
        # Announced keys start with this many characters L1 does not see (a
        # slot group's "{hashtag}").
        self.cut = cut
        self.listeners: list[tuple[L1, int]] = []
        self.live = False
        self.subscribed_at = 0.0  # monotonic() when the live subscription was asked for
        self.heard_until = 0.0  # what the last ping reply proved (see _heard)
        # The live subscription's socket (-1: none), and whether this thread is
        # between taking bytes off it and applying them (see settled()).
        self.fd = -1
        self.reading = False
        self.lock = threading.Lock()
        # Notified each time this thread has applied what it read (catch_up waits on it).
        self.applied = threading.Condition(threading.Lock())
        self.stopped = threading.Event()
        self.client: Any = None  # the connection, for tests that kill it
        self.reads_with = ""  # how the live subscription is read (tests, diagnostics)
        self.thread = threading.Thread(
            target=self._run, name=f"tiercache-l1 {channel}", daemon=True
        )
        self.thread.start()

    def add(self, l1: L1, slot: int) -> None:
        with self.lock:
            self.listeners.append((l1, slot))
            l1.slots[slot].settled = self.settled
            l1.slots[slot].catch_up = self.catch_up
            if self.live:
                # Heard up to now? Not proven: the next ping's reply says it.
                l1.connected(slot, since=self.subscribed_at)

    def max_lag(self) -> float | None:
        """The smallest MAX_LAG of the L1s listening, None when none is bounded."""
        lags = [l1.max_lag for l1, _ in self.listeners if l1.max_lag is not None]
        return min(lags) if lags else None

    def ping_every(self) -> float:
        """Seconds between pings: a quarter of the smallest MAX_LAG listening."""
        lag = self.max_lag()
        return max(MIN_PING_EVERY, PING_EVERY if lag is None else min(PING_EVERY, lag / 4))

    def stop(self) -> None:
        self.stopped.set()

    def settled(self) -> bool:
        """Has every byte that reached this process's socket been applied?

        Asked by a request thread before an L1 hit. A message can sit unread
        for milliseconds after Redis sent it (this thread waits for the GIL or a
        CPU while the request thread runs), and the hit would serve what it
        invalidates. The socket is asked first, then the flag: bytes gone from
        the socket were taken by this thread with the flag up, so once both say
        nothing is pending, every message sent before the first question has
        been applied."""
        fd = self.fd
        if fd < 0:
            return False
        try:
            if fcntl.ioctl(fd, termios.FIONREAD, NOTHING) != NOTHING:
                return False
        except OSError:  # closed under us: the subscription is going
            return False
        return not self.reading

    def catch_up(self) -> bool:
        """settled(), asked until it holds or CATCH_UP has passed.

        Asked by a request thread whose hit found a message not yet applied.
        The subscriber thread usually has it in hand or is woken for it, and
        needs only the GIL, which a request thread keeps for up to the switch
        interval (5 ms) unless it blocks: waiting here blocks. Each answer is
        settled()'s own, so a copy served after it is served as by a request
        that came that much later; what the wait applied may have dropped it
        (the caller looks)."""
        deadline = time.monotonic() + CATCH_UP
        with self.applied:
            while not self.settled():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.applied.wait(left)
        return True

    def _run(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            try:
                self._listen(failures > 0)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - any failure: flush, reconnect
                if failures == 0:
                    logger.warning(
                        "L1 channel %s lost (%r); L1 bypassed until back", self.channel, exc
                    )
            self._set_live(False)
            delay = RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)]
            failures += 1
            self.stopped.wait(delay)

    def _listen(self, failed: bool) -> None:
        source = self.locate(failed)
        kwargs = {**source.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        kwargs.pop("retry_on_error", None)
        pool = redis.ConnectionPool(connection_class=source.connection_class, **kwargs)
        client = redis.Redis(connection_pool=pool)
        pubsub = client.pubsub()
        self.client = pubsub
        try:
            asked = time.monotonic()
            if self.sharded:
                pubsub.ssubscribe(self.channel)
            else:
                pubsub.subscribe(self.channel)
            self.fd = pubsub.connection._sock.fileno()  # type: ignore[attr-defined]
            raw = _RawReplies.of(pubsub)
            self.reads_with = "redis-py" if raw is None else "hiredis"
            self._receive(pubsub, asked, raw)
        finally:
            self.fd = -1  # before the socket closes: its number may be reused
            self.client = None
            pubsub.close()
            pool.disconnect()

    def _receive(self, pubsub: Any, asked: float, raw: _RawReplies | None) -> None:
        state = _Receiving(asked)
        waiting = select.poll()  # waits for bytes without taking them off the socket
        waiting.register(self.fd, select.POLLIN)
        last_ping = time.monotonic()
        while not self.stopped.is_set():
            every = self.ping_every()
            if waiting.poll(every * 1000):
                self._read_all(pubsub, state, raw)
            now = time.monotonic()
            if now - last_ping >= every:
                state.pings.append(time.monotonic())  # taken before the ping leaves
                pubsub.ping()
                last_ping = now
            if now - state.last_seen > DEAD_AFTER:
                raise redis.TimeoutError(f"no reply on the channel for {DEAD_AFTER} s")

    def _read_all(self, pubsub: Any, state: _Receiving, raw: _RawReplies | None) -> None:
        """Read and apply everything that arrived, with the flag settled() reads up:
        with `raw`, what one recv() brought (a reply only partly received keeps the
        flag up: its bytes are off the socket, not applied yet); else through
        redis-py's get_message()."""
        self.reading = True
        try:
            for message in raw.received() if raw is not None else _messages(pubsub):
                state.last_seen = time.monotonic()
                self._handle(message, state)
        except BaseException:
            self._set_live(False)  # before the flag drops: what was read may be unapplied
            raise
        finally:
            self.reading = raw is not None and raw.partial()
            with self.applied:
                self.applied.notify_all()

    def _handle(self, message: dict, state: _Receiving) -> None:
        kind = message["type"]
        if kind in ("message", "smessage"):
            self._dispatch(message["data"])
        elif kind == "pong":
            if state.pings:
                self._heard(state.pings.popleft())
        elif kind in ("subscribe", "ssubscribe"):
            if message["channel"] in state.confirmed:  # resubscribed behind our back
                raise redis.ConnectionError("subscription was renewed")
            state.confirmed.add(message["channel"])
            if len(state.confirmed) == 1:
                self._set_live(True, since=state.asked)
        elif kind == "sunsubscribe":  # the server gave the channel's slot up
            raise redis.ConnectionError("the shard channel's slot moved")

    def _dispatch(self, data: bytes) -> None:
        parsed = _parse(data)
        with self.lock:
            listeners = list(self.listeners)
        if parsed is None:
            # Not a message this app publishes (whoever can PUBLISH on the server can
            # send one): counted and ignored. Dropping the subscription for it would
            # let a stream of junk keep L1 off; it cannot be a change we missed.
            for l1, slot in listeners:
                l1.malformed(slot, data)
            return
        kind, items = parsed
        if self.cut and kind == "k":
            items = [key[self.cut :] for key in items]
        for l1, slot in listeners:
            l1.changed(slot, kind, items)

    def _heard(self, until: float) -> None:
        with self.lock:
            now = time.monotonic()  # the slots were unproven from heard_until until now
            behind = now - self.heard_until
            self.heard_until = until
            listeners = list(self.listeners)
            for l1, slot in listeners:
                l1.heard(slot, until)
        # Each cache counts it and logs it through its error policy (once per
        # burst: a starved process would say it on every ping).
        for l1, slot in listeners:
            l1.fell_behind(slot, behind)

    def _set_live(self, live: bool, since: float = 0.0) -> None:
        with self.lock:
            if self.live == live and not live:
                return
            self.live = live
            self.subscribed_at = self.heard_until = since
            for l1, slot in self.listeners:
                if live:
                    l1.connected(slot, since)
                else:
                    l1.lost(slot)


NOTHING = bytes(4)  # FIONREAD's answer for an empty socket (a C int)


class _Receiving:
    """What one subscription's thread keeps while it reads."""

    def __init__(self, asked: float):
        self.asked = asked  # monotonic() when the subscription was asked for
        self.confirmed: set[bytes] = set()
        self.pings: deque[float] = deque()  # when each ping not yet answered was sent
        self.last_seen = time.monotonic()


def _messages(pubsub: Any) -> Iterator[dict]:
    """The messages redis-py has for a subscription now, without waiting."""
    while True:
        message = pubsub.get_message(timeout=0)
        if message is not None:
            yield message
        elif not pubsub.connection.can_read(timeout=0):
            return


class _RawReplies:
    """The replies on a subscribed connection, read straight off its socket.

    redis-py's get_message() costs tens of microseconds of Python per message
    (retry wrappers, readiness checks, two calls per message), paid by every
    process for every change announced: with four workers, a save's few
    messages cost a millisecond of CPU. A subscribed connection only ever
    receives pushes and the replies to its pings, so they are parsed here with
    hiredis, one recv() per wake-up (RESP2 or RESP3). Used on plain TCP
    connections; TLS, whose buffered bytes the socket does not show, keeps
    redis-py's reading, as does a process without hiredis.
    """

    HEALTH_CHECK = b"redis-py-health-check"  # redis-py's own pings, not ours

    def __init__(self, sock: Any):
        self.sock = sock
        self.reader = hiredis.Reader()

    @classmethod
    def of(cls, pubsub: Any) -> _RawReplies | None:
        conn = pubsub.connection
        sock = getattr(conn, "_sock", None)
        plain = isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
        if hiredis is None or not plain or str(conn.protocol or 2) not in ("2", "3"):
            return None
        return cls(sock)

    def received(self) -> list[dict]:
        """The messages one recv() completed (the socket said it had bytes)."""
        data = self.sock.recv(65536)
        if not data:
            raise redis.ConnectionError("the server closed the subscription")
        self.reader.feed(data)
        messages = []
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, Exception):  # hiredis' ReplyError
                raise redis.ResponseError(str(reply))
            if reply == b"PONG":  # RESP3 answers a ping in place, not as a push
                messages.append({"type": "pong", "channel": None, "data": None})
                continue
            if reply == self.HEALTH_CHECK:
                continue
            if not isinstance(reply, list) or not reply or not isinstance(reply[0], bytes):
                raise redis.ConnectionError(f"unexpected reply on a subscription: {reply!r}")
            kind = reply[0].decode().lower()
            if kind == "pong" and len(reply) > 1 and reply[1] == self.HEALTH_CHECK:
                continue
            rest = [*reply[1:], None, None]
            messages.append({"type": kind, "channel": rest[0], "data": rest[1]})
        return messages

    def partial(self) -> bool:
        """Does the parser hold the start of a reply whose end has not arrived?"""
        return bool(self.reader.has_data())


def _parse(data: Any) -> tuple[str, list[str]] | None:
    """(kind, items) of a change message: b"*", or "k"/"t" and a JSON list of text; else None."""
    if data == b"*":
        return "*", []
    if not isinstance(data, bytes) or len(data) < 2 or data[:1] not in (b"k", b"t"):
        return None
    try:
        items = json.loads(data[1:])
    except ValueError:  # UnicodeDecodeError included
        return None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return None
    return chr(data[0]), items


def listen(l1: L1, partitions: list[Any]) -> None:
    """Subscribe l1's slots to their partitions' channels (once per process)."""
    pid = os.getpid()
    if l1.listening_pid == pid:
        return
    with _subscribers_lock:
        if l1.listening_pid == pid:
            return
        for index, partition in enumerate(partitions):
            store = partition.store
            if store.channel is None:
                continue
            if store.sharded_channel:  # where it is served is asked at every connect
                identity: tuple = (store.url, store.channel)
                locate = store.channel_pool
            else:
                pool = store.pool
                identity = (repr(sorted(pool.connection_kwargs.items(), key=str)), store.channel)
                locate = lambda failed, pool=pool: pool  # noqa: E731 - one server, always
            subscriber = _subscribers.get(identity)
            if subscriber is None:
                cut = len(store.key_prefix) if store.sharded_channel else 0
                subscriber = Subscriber(locate, store.channel, store.sharded_channel, cut)
                _subscribers[identity] = subscriber
            subscriber.add(l1, index)
        l1.listening_pid = pid


def subscribers() -> list[Subscriber]:
    """The subscriptions of this process (tests, diagnostics)."""
    with _subscribers_lock:
        return list(_subscribers.values())


def _after_fork() -> None:
    # Threads do not survive a fork: the child subscribes again when next asked.
    global _subscribers_lock
    _subscribers_lock = threading.Lock()
    _subscribers.clear()
    forget_all()


os.register_at_fork(after_in_child=_after_fork)
