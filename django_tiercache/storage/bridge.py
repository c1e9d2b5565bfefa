"""Running the cache's one (synchronous) implementation natively inside an event loop.

``await run(fn, *args)`` calls ``fn`` in a greenlet of its own (one parked
after an earlier call, when the thread has one). Whenever the
code below it needs the network, it calls ``await_only(awaitable)``: the
greenlet switches back to the coroutine, which awaits it on the event loop
(other coroutines run meanwhile) and switches back with the result, or with
the exception, raised where ``await_only`` was called. So the async API runs
every rule of the sync one (keys, headers, fences, leases, signing, L1, single
flight) with no second copy of them and no thread hop; only the connections
differ (stores/async_pools.py). A task cancelled while it waits gets
CancelledError raised inside the sync code at that point, which unwinds as any
error does (connections dropped, claims released).

``pause(seconds)`` and ``wait_for_event(event, seconds)`` are the blocking waits
of that code made loop-friendly: inside a bridge they await, elsewhere they block.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")
POLL = 0.002  # seconds between looks at a threading.Event from inside a bridge


# Greenlets kept parked per thread for the next call: starting a new one costs
# about 10 µs (CPython allocates, then frees, a data stack for its frames),
# as much as the rest of a cache read; switching to a parked one, under 1 µs.
IDLE_BRIDGES = 256
_idle = threading.local()
_PARKED = object()  # what a bridge hands its driver when the call has ended


class _Bridge(greenlet.greenlet):
    """A greenlet running sync cache code for the coroutine that called run(),
    one call after another: between calls it waits, parked, for the next."""

    def __init__(self) -> None:
        super().__init__(self._serve)
        self.driver: greenlet.greenlet | None = None
        self.call: tuple | None = None  # (context, fn, args, kwargs) of the call to run
        self.failed = False
        self.outcome: Any = None  # the call's result, or what it raised

    def _serve(self) -> None:
        # Nothing of a call stays referenced while parked (a value, a request).
        while True:  # GreenletExit, thrown when a parked bridge is collected, ends it
            context, fn, args, kwargs = self.call  # type: ignore[misc]
            self.call = None
            try:
                self.outcome, self.failed = context.run(fn, *args, **kwargs), False
            except BaseException as exc:  # noqa: BLE001 - raised again by run()
                self.outcome, self.failed = exc, True
            del context, fn, args, kwargs
            driver, self.driver = self.driver, None
            driver.switch(_PARKED)  # type: ignore[union-attr]


def in_bridge() -> bool:
    """Is this sync code running for a coroutine (so its I/O must go through the loop)?"""
    return isinstance(greenlet.getcurrent(), _Bridge)


def await_only(awaitable: Awaitable[T]) -> T:
    """The result of `awaitable`, awaited by the coroutine this bridge runs for."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridge):
        raise RuntimeError("await_only() called outside bridge.run()")
    return current.driver.switch(awaitable)  # type: ignore[union-attr]  # set while it runs


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, its I/O awaited on this event loop."""
    idle = _idle.__dict__.setdefault("bridges", [])
    bridge = idle.pop() if idle else _Bridge()
    bridge.driver = greenlet.getcurrent()
    bridge.call = (contextvars.copy_context(), fn, args, kwargs)
    result = bridge.switch()
    while result is not _PARKED:  # an awaitable, from await_only()
        try:
            value = await result
        except BaseException as exc:  # noqa: BLE001 - raised inside the sync code instead
            result = bridge.throw(exc)
        else:
            result = bridge.switch(value)
    outcome, bridge.outcome = bridge.outcome, None
    if len(idle) < IDLE_BRIDGES:
        idle.append(bridge)
    if bridge.failed:
        raise outcome
    return outcome


def pause(seconds: float) -> None:
    """time.sleep(), or an asyncio.sleep the loop goes on during, inside a bridge."""
    if in_bridge():
        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def wait_for_event(event: threading.Event, seconds: float) -> bool:
    """event.wait(seconds); inside a bridge, polled between asyncio sleeps, since the
    thread that would set it may be this loop's (another coroutine's load)."""
    if not in_bridge():
        return event.wait(seconds)
    deadline = time.monotonic() + seconds
    while not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await_only(asyncio.sleep(min(POLL, left)))
    return True
