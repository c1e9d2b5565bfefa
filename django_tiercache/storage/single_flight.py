"""Single flight: when many callers miss the same key at once, one loads it.

Within a process, the threads that miss a key while another thread of the
same cache is loading it wait for that thread and read what it stored.
Across processes, the loader first *claims* the key on its partition (a claim
that expires by itself after ``CLAIM_TTL``, one second by default) and renews
the claim every third of that while it loads (a heartbeat, from one thread per
process); a process that finds the key claimed polls the cache until the value
appears or the claim is gone (then it claims it itself). So a loader that dies
(SIGKILL, a lost machine) is noticed within about CLAIM_TTL: one waiter takes
over while the others keep waiting, instead of all of them loading after WAIT.
Whoever waits longer than ``WAIT`` loads the value itself, as does everyone
when the partition cannot be reached: single flight saves work, it never makes
a read fail. Both timings are ``OPTIONS["SINGLE_FLIGHT"]``; ``False`` turns
single flight off.

A caller missing several keys (``get_or_set_many``, ``get_objects``) claims
all it can, loads those in one call, and only then waits for the others, so
two callers holding claims on each other's keys never wait on each other.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .bridge import pause, wait_for_event
from .options import SINGLE_FLIGHT_DEFAULTS
from .partition import fan_out

# Seconds between looks at the cache while another process loads. A load of one
# row takes a millisecond or two: a first look after 5 ms made each waiter pay
# 5 ms for it (the load benchmark's 95/5 p99); later looks back off.
POLL = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05)

Load = Callable[[list[str]], dict[str, Any]]  # made keys -> {made key: value}
# Told the keys a caller is about to load, while their claims are on their way:
# what it must ask Redis before loading (the tags' snapshot) then costs no round
# trip of its own.
Meanwhile = Callable[[list[str]], None]

_flights: dict[tuple, threading.Event] = {}
_flights_lock = threading.Lock()

# Claims being loaded in this process: owner -> (cache, keys, ttl ms), renewed by
# the heartbeat thread every third of their TTL.
_beating: dict[str, tuple[Any, list[str], int]] = {}
_beating_lock = threading.Lock()
_heart: threading.Thread | None = None
_heart_pid = 0


def load(
    cache: Any,
    made_key: str,
    compute: Callable[[], Any],
    reread: Load,
    meanwhile: Meanwhile | None = None,
) -> Any:
    """compute() once across callers; the others return what reread() finds."""
    compute_one = lambda keys: {made_key: compute()}  # noqa: E731
    return load_many(cache, [made_key], compute_one, reread, meanwhile)[made_key]


def load_many(
    cache: Any,
    made_keys: list[str],
    compute: Load,
    reread: Load,
    meanwhile: Meanwhile | None = None,
) -> dict[str, Any]:
    """compute(keys) for the keys no other caller is loading; for the others,
    what reread(keys) finds once they are done (or compute them after WAIT).
    meanwhile(keys), if given, runs once, while this caller's first claims are
    on their way (not at all when single flight is off)."""
    timings = cache._single_flight
    if timings is None:
        return compute(made_keys)
    identity = id(cache._fencing.policy)  # one per cache per process, whatever the thread
    ours: dict[str, threading.Event] = {}
    theirs: dict[str, threading.Event] = {}
    with _flights_lock:
        for key in made_keys:
            flight = _flights.get((identity, key))
            if flight is None:
                ours[key] = _flights[(identity, key)] = threading.Event()
            else:
                theirs[key] = flight
    result: dict[str, Any] = {}
    try:
        if ours:
            claimed = _across_processes(cache, list(ours), compute, reread, timings, meanwhile)
            result.update(claimed)
    finally:
        with _flights_lock:
            for key in ours:
                del _flights[(identity, key)]
        for flight in ours.values():
            flight.set()
    if theirs:
        result.update(_after_threads(theirs, compute, reread, timings["WAIT"]))
    return result


def _after_threads(
    flights: dict[str, threading.Event], compute: Load, reread: Load, wait: float
) -> dict[str, Any]:
    """Wait for this process's other loaders; compute what they did not store."""
    deadline = time.monotonic() + wait
    for flight in flights.values():
        wait_for_event(flight, max(0.0, deadline - time.monotonic()))
    found = reread(list(flights))
    missing = [key for key in flights if key not in found]
    if missing:
        found.update(compute(missing))
    return found


def _across_processes(
    cache: Any,
    keys: list[str],
    compute: Load,
    reread: Load,
    timings: dict[str, Any],
    meanwhile: Meanwhile | None,
) -> dict[str, Any]:
    owner = f"{os.getpid()}:{threading.get_ident()}:{os.urandom(4).hex()}"
    claim_ms = max(1, int(timings["CLAIM_TTL"] * 1000))
    deadline = time.monotonic() + timings["WAIT"]
    result: dict[str, Any] = {}
    pending, polls = keys, 0
    while True:
        owned, held, elsewhere = _claim(cache, pending, owner, claim_ms, meanwhile)
        meanwhile = None  # once: a snapshot taken then still serves (older, it only refuses more)
        if owned:
            loaded = _load_owned(cache, owned, held, owner, compute, reread, polls > 0, claim_ms)
            result.update(loaded)
        pending = elsewhere
        if not pending:
            return result
        if time.monotonic() >= deadline:
            result.update(compute(pending))  # waited long enough: load them ourselves
            return result
        pause(POLL[min(polls, len(POLL) - 1)])
        polls += 1
        found = reread(pending)
        result.update(found)
        pending = [key for key in pending if key not in found]
        if not pending:
            return result


def _claim(
    cache: Any, keys: list[str], owner: str, claim_ms: int, meanwhile: Meanwhile | None = None
) -> tuple[list[str], list[str], list[str]]:
    """(keys to load, of which claimed in Redis, keys another caller loads).
    One call per partition for all its keys, the partitions' calls overlapped,
    and with meanwhile(keys) while they are on their way."""
    groups = cache._group(keys)
    if meanwhile is None:
        calls = [(partition, "claim", (ks, owner, claim_ms)) for partition, ks in groups.items()]
        return _sorted(fan_out(calls), groups)
    sent = [partition.start("claim", ks, owner, claim_ms) for partition, ks in groups.items()]
    try:
        meanwhile(keys)
    except BaseException:
        # Nothing will be loaded: the claims taken go at once, not when they expire.
        _, held, _ = _sorted([call.outcome() for call in sent], groups)
        _release_later(cache, held, owner)
        raise
    return _sorted([call.outcome() for call in sent], groups)


def _sorted(
    claims: list[Any], groups: dict[Any, list[str]]
) -> tuple[list[str], list[str], list[str]]:
    """The claims' outcomes, per partition, as _claim's three lists."""
    owned, held, elsewhere = [], [], []
    for claim, ks in zip(claims, groups.values(), strict=True):
        if not claim.ok:
            owned += ks  # the partition is down: load without a claim
            continue
        for key, taken in zip(ks, claim.value, strict=True):
            if taken:
                owned.append(key)
                held.append(key)
            else:
                elsewhere.append(key)
    return owned, held, elsewhere


def _release(cache: Any, keys: list[str], owner: str) -> None:
    """Drop owner's claims on keys: one call per partition, overlapped."""
    fan_out([(p, "release", (ks, owner)) for p, ks in cache._group(keys).items()])


def _release_later(cache: Any, keys: list[str], owner: str) -> None:
    """Drop owner's claims on keys without waiting: nobody needs the reply (a
    waiter reads the value, stored before this was sent, and a release lost on
    the way expires with its claim)."""
    for partition, ks in cache._group(keys).items():
        partition.send_later("release", ks, owner)


def _load_owned(
    cache: Any,
    owned: list[str],
    held: list[str],
    owner: str,
    compute: Load,
    reread: Load,
    waited: bool,
    claim_ms: int,
) -> dict[str, Any]:
    if held:
        _beat(owner, cache, held, claim_ms)
    try:
        found: dict[str, Any] = {}
        if waited:  # stored by the one we waited for, just before we claimed?
            found = reread(owned)
            owned = [key for key in owned if key not in found]
        if owned:
            found.update(compute(owned))
        return found
    finally:
        if held:
            with _beating_lock:
                _beating.pop(owner, None)
        _release_later(cache, held, owner)


def _beat(owner: str, cache: Any, keys: list[str], claim_ms: int) -> None:
    """Renew these claims until the load ends (one heartbeat thread per process)."""
    global _heart, _heart_pid
    with _beating_lock:
        _beating[owner] = (cache, keys, claim_ms)
        if _heart is None or not _heart.is_alive() or _heart_pid != os.getpid():
            _heart_pid = os.getpid()  # a forked child starts its own
            _heart = threading.Thread(
                target=_heartbeat, name="tiercache-single-flight", daemon=True
            )
            _heart.start()


def _heartbeat() -> None:
    while True:
        with _beating_lock:
            claims = list(_beating.items())
        if not claims:
            time.sleep(0.05)
            continue
        every = min(ms for _, (_, _, ms) in claims) / 3000
        for owner, (cache, keys, claim_ms) in claims:
            groups = cache._group(keys)
            fan_out([(p, "claim", (ks, owner, claim_ms)) for p, ks in groups.items()])  # renews
            with _beating_lock:
                done = owner not in _beating
            if done:
                # The load ended meanwhile and its release may have reached Redis
                # before this renewal, which then took the claims again: drop them.
                _release(cache, keys, owner)
        time.sleep(every)


def revalidation(cache: Any, made_key: str) -> Callable[[], None] | None:
    """Claim the right to recompute a key whose value is still served (stale
    while revalidate): a release callable, or None when another caller has it.

    Never waits. When the partition cannot be reached the claim is granted:
    recomputing twice is better than serving a stale value for longer.
    """
    timings = cache._single_flight or SINGLE_FLIGHT_DEFAULTS
    owner = f"{os.getpid()}:{threading.get_ident()}:{os.urandom(4).hex()}"
    name = f"revalidate:{made_key}"
    partition = cache._partition(made_key)
    claim = partition.run("claim", [name], owner, max(1, int(timings["CLAIM_TTL"] * 1000)))
    if claim.ok and not claim.value[0]:
        return None

    def release() -> None:
        if claim.ok:
            partition.run("release", [name], owner)

    return release
