"""The admin's key browser: a bounded look at what a cache holds, partition by partition.

Keys are found with SCAN and a glob pattern (never KEYS, which blocks the server),
at most KEYS_SHOWN per partition and SCAN_COUNT keys asked per call; what is cut
off is said. Each key is then read through its partition's ``entry`` Function,
as get() reads it: so the page shows the cache's own view (the time left, the
tags, and "invalidated" for an entry whose tags were invalidated, which get()
misses), and a hash or set made by the django-redis API shows as such. An
entry's header keeps its tags' slots, not their names (stores/slots.py): a
tag shows by name if this process has used it, else as its slot ("#<n>").

Values can hold personal data: they are shown only to users who may act on
caches, and only decoded from bytes whose MAC this site made (codec.py). Bytes
someone else planted are shown as "not signed here" and never unpickled. Every
string goes through the template's escaping, and partition names through
redaction (no password of a URL).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from redis.exceptions import RedisError

from ..redis_compat import scanned
from ..storage.codec import Tampered
from ..storage.partition import UNREACHABLE
from ..storage.stores.slots import known_names, slot_name
from .redaction import redact_text

KEYS_SHOWN = 100  # per partition and page
SCAN_COUNT = 200  # SCAN's COUNT hint
PREVIEW_CHARS = 300


@dataclass
class Key:
    key: str  # as given to set(), without KEY_PREFIX and version
    made: str  # as stored
    state: str  # "entry", "invalidated" (or gone since found), "hash or set", "unreadable"
    ttl_s: float | None = None  # None: never expires
    tags: list[str] = field(default_factory=list)
    size: int | None = None  # bytes of the stored value (tagged: without the header)
    preview: str | None = None  # the decoded value's repr (cut), or why not shown


@dataclass
class PartitionKeys:
    name: str
    keys: list[Key] = field(default_factory=list)
    more: bool = False  # matches past KEYS_SHOWN were not listed
    error: str | None = None


def browse(alias: str, pattern: str, values: bool) -> list[PartitionKeys]:
    """The keys of caches[alias] that match `pattern` (a glob on the caller's keys),
    partition by partition; with `values`, a preview of each value."""
    cache: Any = caches[alias]  # a TierCache: tiercache_aliases() chose it
    made_pattern = cache.make_key(pattern)
    head = cache.make_key("")
    found = []
    for partition in cache._partitions:
        listed = PartitionKeys(redact_text(partition.name))
        try:
            matches = _matches(partition, made_pattern)
        except (*UNREACHABLE, RedisError) as exc:
            listed.error = redact_text(f"{type(exc).__name__}: {exc}")
            found.append(listed)
            continue
        listed.more = len(matches) > KEYS_SHOWN
        for made in sorted(matches[:KEYS_SHOWN]):
            key = made[len(head) :] if made.startswith(head) else made
            listed.keys.append(_read(cache, partition, key, made, values))
        found.append(listed)
    return found


def _matches(partition: Any, made_pattern: str) -> list[str]:
    """Up to KEYS_SHOWN + 1 made keys matching, from SCAN."""
    return list(itertools.islice(scanned(partition, made_pattern, SCAN_COUNT), KEYS_SHOWN + 1))


def _names(partition: Any, made: str, slot: str) -> list[str]:
    """An entry's header keeps its tags' slots ("#<n>"): the tags this process
    wrote the entry under (the plain reads' hints), else those it has used."""
    hints = getattr(partition.store, "hints", None)
    written = hints.tags.get(made, ()) if hints is not None else ()
    return [t for t in written if slot_name(t) == slot and t != slot] or known_names(slot)


def _read(cache: Any, partition: Any, key: str, made: str, values: bool) -> Key:
    outcome = partition.run("entry", made)
    if not outcome.ok:
        if "WRONGTYPE" in str(outcome.error):
            return Key(key, made, "hash or set")
        return Key(key, made, "unreadable", preview=redact_text(str(outcome.error)))
    if outcome.value is None:
        return Key(key, made, "invalidated")
    body, pttl, slots = outcome.value
    tags = sorted({name for slot in slots for name in _names(partition, made, slot)})
    listed = Key(key, made, "entry", None if pttl < 0 else pttl / 1000, tags, len(body))
    if values:
        listed.preview = _preview(cache, made, body)
    return listed


def _preview(cache: Any, made: str, body: bytes) -> str:
    try:
        value = cache._codec.decode(made, body)
    except Tampered:
        return "(not signed by this site: not decoded)"
    except Exception as exc:  # noqa: BLE001 - a value this process cannot decode is shown as such
        return f"(not decoded: {type(exc).__name__})"
    text = repr(value)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"
