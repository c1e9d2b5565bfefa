"""A partition (a store behind a circuit breaker) and calls across several of them."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import PartitionUnavailable
from .failures import CircuitBreaker
from .stores import store_for
from .stores.base import Done, Store, pool_exhausted

# Errors that say the server is unreachable or too slow; they trip the breaker.
# An error reply (ResponseError) means the server is alive and does not.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
# A timeout opens the breaker at once (see CircuitBreaker); TimeoutError is also
# what a bare socket raises.
TIMEOUTS = (RedisTimeoutError, TimeoutError)
_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(url: str, failures: int, cooldown: float) -> CircuitBreaker:
    """The process-wide breaker of a server, shared by every thread and cache alias."""
    with _breakers_lock:
        breaker = _breakers.get(url)
        if breaker is None or (breaker.threshold, breaker.cooldown) != (failures, cooldown):
            breaker = _breakers[url] = CircuitBreaker(failures, cooldown)
        return breaker


def reset_breakers() -> None:
    """Forget every breaker's past failures (tests; an operator after a repair)."""
    with _breakers_lock:
        _breakers.clear()


class Partition:
    # observers.watching_calls() of the cache: told of every call, when anyone listens.
    observer: Any = None

    def __init__(self, name: str, url: str, ns: str, options: dict[str, Any]):
        self.name, self.url = name, url
        # A short, stable id for the keys other partitions keep about this one.
        self.id = hashlib.blake2b(name.encode(), digest_size=6).hexdigest()
        self.store: Store = store_for(url, ns, options)
        self.breaker = breaker_for(url, options["BREAKER_FAILURES"], options["BREAKER_COOLDOWN"])

    def __repr__(self) -> str:
        return f"<Partition {self.name}>"

    def start(self, operation: str, *args: Any) -> Pending:
        started = perf_counter_ns()
        if not self.breaker.acquire():
            error = PartitionUnavailable(f"circuit breaker open for partition {self.name}")
            return Pending(self, operation, Done(error=error), started)
        return Pending(self, operation, getattr(self.store, operation)(*args), started)

    def send_later(self, operation: str, *args: Any) -> None:
        """The store's ``<operation>_later``: sent now, its reply read later, the
        caller told nothing. For releases, which expire by themselves when they
        fail: a partition whose breaker is open is skipped, and a failure is
        counted (store.later_failed), never raised."""
        if not self.breaker.allows():
            return
        try:
            getattr(self.store, f"{operation}_later")(*args)
        except Exception as error:  # noqa: BLE001 - counted; what it releases expires by itself
            self.store.later_failed(error)

    def run(self, operation: str, *args: Any) -> Outcome:
        """start() and outcome() in one, without the Pending in between (the hot path)."""
        observer, breaker = self.observer, self.breaker
        started = 0 if observer is None else perf_counter_ns()
        if not breaker.acquire():
            error = PartitionUnavailable(f"circuit breaker open for partition {self.name}")
            return Pending(self, operation, Done(error=error), started).outcome()
        trips, call = breaker.trips, getattr(self.store, operation)(*args)
        outcome = _settle(self, operation, call)
        if observer is not None:  # latency per operation, breaker trips (statistics)
            observer.called(outcome, perf_counter_ns() - started, trips)
        return outcome


@dataclass(slots=True)
class Outcome:
    partition: Partition
    operation: str
    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Pending:
    __slots__ = ("partition", "operation", "call", "started")

    def __init__(self, partition: Partition, operation: str, call: Any, started: int = 0):
        self.partition, self.operation, self.call = partition, operation, call
        self.started = started

    def outcome(self) -> Outcome:
        observer, trips = self.partition.observer, self.partition.breaker.trips
        outcome = _settle(self.partition, self.operation, self.call)
        if observer is not None:  # latency per operation, breaker trips (statistics)
            observer.called(outcome, perf_counter_ns() - self.started, trips)
        return outcome


def _settle(partition: Partition, operation: str, call: Any) -> Outcome:
    """The call's outcome; tells the partition's breaker whether the server answered."""
    breaker = partition.breaker
    try:
        value = call.result()
    except PartitionUnavailable as exc:
        return Outcome(partition, operation, error=exc)
    except UNREACHABLE as exc:
        if not pool_exhausted(exc):  # the server was never asked: no verdict on it
            breaker.failed(timed_out=isinstance(exc, TIMEOUTS))
        return Outcome(partition, operation, error=exc)
    except Exception as exc:  # noqa: BLE001 - an error reply: the policy decides
        breaker.succeeded()
        return Outcome(partition, operation, error=exc)
    if breaker.failures:
        breaker.succeeded()
    return Outcome(partition, operation, value)


def fan_out(calls: list[tuple[Partition, str, tuple]]) -> list[Outcome]:
    """Start every call, then collect them: one round trip of latency in all."""
    if len(calls) == 1:  # one partition: nothing to overlap
        partition, operation, args = calls[0]
        return [partition.run(operation, *args)]
    pending = [partition.start(operation, *args) for partition, operation, args in calls]
    return [p.outcome() for p in pending]
