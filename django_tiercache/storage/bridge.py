"""Running the cache's one (synchronous) implementation natively inside an event loop.

``await run(fn, *args)`` calls ``fn`` in a greenlet of its own. Whenever the
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


class _Bridge(greenlet.greenlet):
    """The greenlet running sync cache code for one awaiting coroutine."""

    def __init__(self, fn: Callable[[], Any], driver: greenlet.greenlet):
        super().__init__(fn, driver)
        self.driver = driver


def in_bridge() -> bool:
    """Is this sync code running for a coroutine (so its I/O must go through the loop)?"""
    return isinstance(greenlet.getcurrent(), _Bridge)


def await_only(awaitable: Awaitable[T]) -> T:
    """The result of `awaitable`, awaited by the coroutine this bridge runs for."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Bridge):
        raise RuntimeError("await_only() called outside bridge.run()")
    return current.driver.switch(awaitable)


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, its I/O awaited on this event loop."""
    context = contextvars.copy_context()
    bridge = _Bridge(lambda: context.run(fn, *args, **kwargs), greenlet.getcurrent())
    result = bridge.switch()
    while not bridge.dead:
        try:
            value = await result
        except BaseException as exc:  # noqa: BLE001 - raised inside the sync code instead
            result = bridge.throw(exc)
        else:
            result = bridge.switch(value)
    return result


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
