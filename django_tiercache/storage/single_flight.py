"""Single flight: when many callers miss the same key at once, one loads it.

Within a process, the threads that miss a key while another thread of the
same cache is loading it wait for that thread and read what it stored.
Across processes, the loader first *claims* the key on its partition (``SET
NX PX``, a claim that expires by itself); a process that finds the key
claimed polls the cache until the value appears or the claim is gone (then
it claims it itself). Whoever waits longer than ``WAIT`` loads the value
itself, as does everyone when the partition cannot be reached: single
flight saves work, it never makes a read fail.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

CLAIM_MS = 10_000  # a claim outlives a loader that died by at most this much
WAIT = 5.0  # seconds a caller waits for another's load before loading itself
POLL = (0.005, 0.01, 0.02, 0.05)  # seconds between looks at the cache while waiting

_flights: dict[tuple, threading.Event] = {}
_flights_lock = threading.Lock()


def load(
    cache: Any,
    made_key: str,
    compute: Callable[[], Any],
    reread: Callable[[], dict[str, Any]],
) -> Any:
    """compute() once across callers; the others return what reread() finds."""
    identity = (id(cache._fencing.policy), made_key)
    with _flights_lock:
        waiting_for = _flights.get(identity)
        if waiting_for is None:
            flight = _flights[identity] = threading.Event()
    if waiting_for is not None:
        waiting_for.wait(WAIT)
        found = reread()
        return found[made_key] if made_key in found else compute()
    try:
        return _across_processes(cache, made_key, compute, reread)
    finally:
        with _flights_lock:
            del _flights[identity]
        flight.set()


def _across_processes(
    cache: Any, made_key: str, compute: Callable[[], Any], reread: Callable[[], dict]
) -> Any:
    partition = cache._partition(made_key)
    owner = f"{os.getpid()}:{threading.get_ident()}:{os.urandom(4).hex()}"
    deadline = time.monotonic() + WAIT
    polls = 0
    while True:
        claim = partition.run("claim", made_key, owner, CLAIM_MS)
        if not claim.ok or claim.value:
            break  # ours (or the partition is down: load without a claim)
        if time.monotonic() >= deadline:
            return compute()
        time.sleep(POLL[min(polls, len(POLL) - 1)])
        polls += 1
        found = reread()
        if made_key in found:
            return found[made_key]
    try:
        if claim.ok and polls:  # stored by the one we waited for, just before we claimed?
            found = reread()
            if made_key in found:
                return found[made_key]
        return compute()
    finally:
        if claim.ok:
            partition.run("release", made_key, owner)
