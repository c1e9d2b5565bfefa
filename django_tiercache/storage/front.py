"""The L1 tier in front of a cache's partitions: reads through it, changes to it.

tier.py calls these when the cache has an L1 (OPTIONS["L1"]); without one
nothing here runs. What L1 keeps and when it drops it: see storage/l1.py.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from time import monotonic
from typing import Any

from .coherence import listen
from .l1 import L1, MISS
from .partition import fan_out
from .stores.slots import slot_names

_l1s: dict[tuple, L1] = {}
_l1s_lock = threading.Lock()


def l1_for(identity: tuple, settings: dict[str, Any], partitions: list, loads: Any) -> L1 | None:
    """The process-wide L1 of a cache (Django builds a backend per thread), or
    None when no partition can announce its changes (memory:// partitions)."""
    if not any(p.store.channel for p in partitions):
        return None
    key = (identity, tuple(sorted(settings.items())))
    with _l1s_lock:
        l1 = _l1s.get(key)
        if l1 is None:
            l1 = _l1s[key] = L1(
                len(partitions),
                settings["MAX_ENTRIES"],
                settings["MAX_BYTES"],
                settings["TIMEOUT"],
                loads,
                settings["MAX_LAG"],
            )
    return l1


def read(cache: Any, made_keys: list[str], operation: str) -> dict[str, Any]:
    """Look in L1 first; read the rest from the partitions, keeping copies."""
    l1: L1 = cache._l1
    found: dict[str, Any] = {}
    if len(made_keys) == 1:  # get(): the common case, kept short
        value = l1.get(made_keys[0])
        if value is not MISS:
            cache._observer.l1_hits(1)
            return {made_keys[0]: value}
        missing = made_keys
    else:
        missing = []
        for key in made_keys:
            value = l1.get(key)
            if value is MISS:
                missing.append(key)
            else:
                found[key] = value
        if found:
            cache._observer.l1_hits(len(found))
    if missing:
        if l1.listening_pid != os.getpid():
            listen(l1, cache._partitions)
        read_partitions(cache, l1, missing, operation, found)
    return found


def read_partitions(cache: Any, l1: L1, keys: list[str], operation: str, found: dict) -> None:
    groups = cache._group(keys)
    leased = cache._fencing.enabled
    slots = [cache._slot_of[p] for p in groups]
    # Tickets are taken before anything is sent: a change heard after this
    # point may postdate what Redis answers, and then the copy is not kept.
    tickets = [l1.ticket(s) for s in slots]
    started = monotonic()
    calls = [
        (p, "read", (ks, leased, True) if t is not None else (ks, leased))
        for (p, ks), t in zip(groups.items(), tickets, strict=True)
    ]
    before = len(found)
    for outcome, ks, slot, ticket in zip(
        fan_out(calls), groups.values(), slots, tickets, strict=True
    ):
        if outcome.ok:
            settle(cache, l1, outcome, ks, slot, ticket, started, found)
        else:
            cache._policy.failed(operation, outcome.partition.name, outcome.error)
    cache._observer.read(keys, len(found) - before)


def settle(
    cache: Any,
    l1: L1,
    outcome: Any,
    keys: list[str],
    slot: int,
    ticket: int | None,
    started: float,
    found: dict,
) -> None:
    """Decode one partition's answer into found, keeping copies in L1."""
    if ticket is None:
        lease, bodies = outcome.value
        pttls, tags = [0] * len(keys), [()] * len(keys)
    else:
        lease, bodies, pttls, tags = outcome.value
    if cache._fencing.needs_renewal(lease) or any(type(b) is int for b in bodies):
        bodies = cache._renew_and_reread(outcome.partition, keys, bodies)
        ticket = None  # what the renewal changed may not be heard yet
    if outcome.partition.store.elsewhere_at >= started:
        ticket = None  # answered by a server whose changes this process does not hear
    leased = cache._fencing.enabled
    for key, body, pttl, key_tags in zip(keys, bodies, pttls, tags, strict=True):
        if type(body) is not bytes:
            continue
        if ticket is None:
            cache._decode_into(found, key, body, outcome.partition)
            continue
        try:
            value, data = cache._codec.decode_keeping(key, body)
        except Exception:  # noqa: BLE001 - tampered or undecodable: reported as on a plain read
            cache._decode_into({}, key, body, outcome.partition)
            continue
        found[key] = value
        seconds = lifetime(l1, pttl, lease if leased and key_tags else -1)
        l1.fill(key, slot, ticket, value, data, key_tags, started + seconds)


def lifetime(l1: L1, pttl: int, lease: int) -> float:
    """Seconds a copy may live: the L1 TIMEOUT, capped by the entry's own time
    left and (tagged entries of leased partitions) by the lease's."""
    seconds = l1.timeout
    if pttl > 0:
        seconds = min(seconds, pttl / 1000)
    if lease >= 0:
        seconds = min(seconds, lease / 1000)
    return seconds


def changed_keys(cache: Any, keys: Iterable[str]) -> None:
    """This process wrote or deleted keys: its own copies go at once (other
    processes hear of it on the channel)."""
    for partition, ks in cache._group(keys).items():
        cache._l1.changed(cache._slot_of[partition], "k", ks)


def changed_tags(cache: Any, tags: Iterable[str]) -> None:
    # Copies are kept under their entries' slots (what a header records), as
    # the change messages name them.
    tags = slot_names(tuple(tags))
    for slot in range(len(cache._partitions)):
        cache._l1.changed(slot, "t", tags)


def cleared(cache: Any) -> None:
    cache._l1.clear()
