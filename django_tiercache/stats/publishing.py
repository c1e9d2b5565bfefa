"""Shipping each process's counters to Redis every few seconds, and reading them back.

A background thread (one per process) sends every recorder's increments since
its last publication, in one script call, to the cache's first Redis partition:

    <prefix>:_tc:stats:<alias>:total       totals since the last reset (HINCRBY)
    <prefix>:_tc:stats:<alias>:m:<minute>  one hash per minute, expiring after the hour
    <prefix>:_tc:stats:<alias>:procs       process -> when it last published
    <prefix>:_tc:stats:<alias>:seq         process -> the last publication applied
    <prefix>:_tc:stats:<alias>:reset       when the statistics were last reset

Each publication carries the process's next sequence number, and the script
applies it only if that number is new. A publication whose reply was lost (a
timeout: it may or may not have been applied) is sent again, with the same
number, before anything newer, so it counts exactly once either way.

Redis adds the increments of every process, so reading is a handful of HGETALLs
whatever the number of processes, and a process that ended still counts in the
totals. Caches without a Redis partition, and caches not named in
settings.CACHES, keep the same figures in this process only (LocalSink).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .conf import get_config

if TYPE_CHECKING:
    from .collection import Recorder

logger = logging.getLogger("django_tiercache")

# KEYS: total, procs, seq, minute. ARGV: process, sequence, now, minute TTL, then
# (total field, minute field, increment) triples. Returns 1 if applied, 0 if seen.
APPLY_SCRIPT = """
local process, sequence = ARGV[1], tonumber(ARGV[2])
redis.call('HSET', KEYS[2], process, ARGV[3])
if sequence <= tonumber(redis.call('HGET', KEYS[3], process) or '0') then
  return 0
end
for i = 5, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 2])
  redis.call('HINCRBY', KEYS[4], ARGV[i + 1], ARGV[i + 2])
end
if #ARGV >= 5 then
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
redis.call('HSET', KEYS[3], process, sequence)
return 1
"""

MINUTES = 60  # the rolling window, at one-minute resolution
MINUTE_TTL = (MINUTES + 2) * 60
LOG_BURST_SECONDS = 60.0

# Who this process is, in the "procs" hash; the nonce tells apart a restarted pid.
PROCESS = {"host": socket.gethostname(), "pid": os.getpid(), "id": uuid.uuid4().hex[:8]}


@dataclass
class Batch:
    """One publication: increments since the last one, numbered per process."""

    sequence: int
    delta: dict[tuple, int]
    now: float
    totals: dict[tuple, int]  # what the recorder will have published once it is applied


@dataclass
class Snapshot:
    """The published figures of one cache."""

    totals: dict[str, int]
    minutes: dict[int, dict[str, int]]  # minute number (epoch seconds // 60) -> fields
    processes: dict[str, dict[str, Any]]
    reset_at: float | None
    shared: bool  # summed over every process (Redis), or this process only
    now: float = field(default_factory=time.time)


def current_minute(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 60)


def field_name(key: tuple) -> str:
    return "|".join(map(str, key))


def minute_field(key: tuple) -> str:
    """Minute hashes keep latency per operation only, to stay small."""
    if key[0] == "lat":
        return f"lat|{key[1]}|{key[3]}"
    if key[0] == "ns":
        return f"ns|{key[1]}"
    return field_name(key)


def process_key() -> str:
    return f"{PROCESS['host']}:{PROCESS['pid']}:{PROCESS['id']}"


class RedisSink:
    """Figures summed over every process, in the cache's first Redis partition."""

    shared = True

    def __init__(self, partition: Any, alias: str):
        self.partition = partition
        self.base = f"{partition.store.ns}stats:{alias}:"
        self._apply: Any = None

    @property
    def client(self) -> Any:
        # Asked for at each use, never while the cache is built: a cluster's client is
        # made at its first call (it asks the cluster for the slot map, which may be down).
        return self.partition.store.client

    def add(self, batch: Batch) -> bool:
        """Apply the batch unless it was applied before; True when applied now."""
        args: list[Any] = [process_key(), batch.sequence, repr(batch.now), MINUTE_TTL]
        for key, value in batch.delta.items():
            args += [field_name(key), minute_field(key), value]
        keys = [f"{self.base}{name}" for name in ("total", "procs", "seq")]
        keys.append(f"{self.base}m:{current_minute(batch.now)}")
        return bool(self.apply(keys=keys, args=args))

    @property
    def apply(self) -> Any:
        # Registered on first use: building a sink must not talk to Redis.
        if self._apply is None:
            self._apply = self.client.register_script(APPLY_SCRIPT)
        return self._apply

    def read_totals(self) -> dict[str, int]:
        """The totals since the last reset alone: one HGETALL (what a scrape needs)."""
        return _ints(self.client.hgetall(f"{self.base}total"))

    def read(self) -> Snapshot:
        now = time.time()
        minutes = _window(now)
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(f"{self.base}total")
        for minute in minutes:
            pipe.hgetall(f"{self.base}m:{minute}")
        pipe.hgetall(f"{self.base}procs")
        pipe.get(f"{self.base}reset")
        total, *per_minute, procs, reset = pipe.execute()
        return Snapshot(
            totals=_ints(total),
            minutes={m: _ints(h) for m, h in zip(minutes, per_minute, strict=True) if h},
            processes={k.decode(): {"seen": float(v)} for k, v in procs.items()},
            reset_at=float(reset) if reset else None,
            shared=True,
            now=now,
        )

    def reset(self) -> None:
        now = time.time()
        keys = [f"{self.base}total", f"{self.base}procs"]
        keys += [f"{self.base}m:{m}" for m in _window(now)]
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(*keys)
        pipe.set(f"{self.base}reset", repr(now))
        pipe.execute()

    def forget_processes(self, keys: list[str]) -> None:
        if keys:
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(f"{self.base}procs", *keys)
            pipe.hdel(f"{self.base}seq", *keys)
            pipe.execute()


class LocalSink:
    """The same figures for this process alone (no Redis partition to share them in)."""

    shared = False

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self.minutes: dict[int, dict[str, int]] = {}
        self.seen = 0.0
        self.reset_at: float | None = None

    def add(self, batch: Batch) -> bool:
        now, minute = batch.now, current_minute(batch.now)
        with self.lock:
            bucket = self.minutes.setdefault(minute, {})
            for key, value in batch.delta.items():
                name = field_name(key)
                self.totals[name] = self.totals.get(name, 0) + value
                name = minute_field(key)
                bucket[name] = bucket.get(name, 0) + value
            for old in [m for m in self.minutes if m <= minute - MINUTES]:
                del self.minutes[old]
            self.seen = now
        return True

    def read_totals(self) -> dict[str, int]:
        with self.lock:
            return dict(self.totals)

    def read(self) -> Snapshot:
        now = time.time()
        window = set(_window(now))
        with self.lock:
            return Snapshot(
                totals=dict(self.totals),
                minutes={m: dict(v) for m, v in self.minutes.items() if m in window},
                processes={process_key(): {"seen": self.seen}} if self.seen else {},
                reset_at=self.reset_at,
                shared=False,
                now=now,
            )

    def reset(self) -> None:
        with self.lock:
            self.totals.clear()
            self.minutes.clear()
            self.reset_at = time.time()

    def forget_processes(self, keys: list[str]) -> None:
        pass


def _window(now: float) -> list[int]:
    last = current_minute(now)
    return list(range(last - MINUTES + 1, last + 1))


def _ints(mapping: dict) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in mapping.items()}


# -- publication --

_registered: list[Recorder] = []
_registered_lock = threading.Lock()
_last_logged: dict[str, float] = {}


def register(recorder: Recorder) -> None:
    """Give a new recorder its sink and have the background thread publish it."""
    recorder.sink = RedisSink(recorder.home, recorder.alias) if recorder.home else LocalSink()
    with _registered_lock:
        _registered.append(recorder)
    _publisher.start()


def publish(recorder: Recorder) -> None:
    """Ship what the recorder counted since its last publication (raises on failure)."""
    with recorder.publish_lock:
        if recorder.home is not None and recorder.home.breaker.is_open:
            raise ConnectionError(f"circuit breaker open for partition {recorder.home.name}")
        if recorder.unsent is not None:
            _send(recorder, recorder.unsent)  # first the one whose fate is unknown
        current = recorder.totals()
        if not current:
            return  # nothing ever counted: this process is no part of the cache's figures
        delta = {}
        for key, value in current.items():
            change = value - recorder.published.get(key, 0)
            if change:
                delta[key] = change if change > 0 else value  # a counter that restarted
        recorder.sequence += 1
        _send(recorder, Batch(recorder.sequence, delta, time.time(), current))


def _send(recorder: Recorder, batch: Batch) -> None:
    # Until the sink answers, the batch may or may not be applied: keep it to send again.
    recorder.unsent = batch
    recorder.sink.add(batch)
    recorder.published, recorder.unsent = batch.totals, None


def publish_all() -> None:
    """Publish every recorder; a failure is logged (once a minute per cache) and retried later."""
    with _registered_lock:
        recorders = list(_registered)
    for recorder in recorders:
        try:
            publish(recorder)
        except Exception as exc:  # noqa: BLE001 - statistics must never break the site
            _log_failure(recorder, exc)


def _log_failure(recorder: Recorder, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_logged.get(recorder.alias, -LOG_BURST_SECONDS) >= LOG_BURST_SECONDS:
        _last_logged[recorder.alias] = now
        logger.warning(
            "cache statistics of %r could not be published (%r); retrying every %ss",
            recorder.alias,
            exc,
            get_config()["STATS_INTERVAL"],
        )


class _Publisher:
    """The background thread; started on first use, again in a forked child."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()

    def start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="tiercache-stats", daemon=True
                )
                self.thread.start()

    def _run(self) -> None:
        while True:
            self.wake.wait(get_config()["STATS_INTERVAL"])
            self.wake.clear()
            publish_all()


_publisher = _Publisher()


def _after_fork_in_child() -> None:
    # The parent publishes what it counted before the fork; the child starts from there.
    global _publisher, _registered_lock
    PROCESS.update(pid=os.getpid(), id=uuid.uuid4().hex[:8])
    _publisher, _registered_lock = _Publisher(), threading.Lock()
    for recorder in _registered:
        recorder.forked()
    if _registered:
        _publisher.start()


os.register_at_fork(after_in_child=_after_fork_in_child)
# The last few seconds of a process that exits cleanly still count.
atexit.register(publish_all)
