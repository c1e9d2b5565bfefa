"""Counting what a cache does, cheaply, in each process.

A Recorder is an observer (storage/observers.py), built by stats/observer.py
(the factory TIERCACHE["OBSERVERS"] names), so the backend and every call to a
partition report here without the core importing this package. Counters live in
one dict per thread, so the hot path takes no lock and loses no update. A
dict's keys are small tuples naming a tier, an operation, a partition, a
latency bucket or a tag prefix, so its size is bounded by what can be named,
never by traffic:

    ("hit" | "miss" | "set" | "delete", tier)    ("inv", tag prefix)
    ("trip", partition)                          (operation, partition): a histogram

A histogram is a list of bucket counts with the total nanoseconds last, updated
in place. When the dicts are summed it becomes ("lat", operation, partition,
bucket) and ("ns", operation, partition) counts, and the error policy's
counters join them as ("err", operation, partition) and ("event", event,
partition). publishing.py sums every few seconds and ships the difference.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.module_loading import import_string

from ..backend import TierCache
from ..exceptions import PartitionUnavailable
from ..storage.observers import Observer, observers_of

if TYPE_CHECKING:
    from ..storage.failures import ErrorPolicy
    from ..storage.partition import Outcome, Partition

# Tag prefixes counted one by one; past this many, further prefixes count as OTHER.
MAX_TAG_PREFIXES = 100
OTHER_PREFIX = "(other)"
_L1_HIT = ("hit", "l1")  # the counter of L1 hits: built once, used on every hit

# Latency buckets: exact microseconds below 8 µs, then four buckets per power
# of two (each at most 25% wide), up to the last one, which takes everything
# from about 58 s on. 100 buckets, so the histograms are bounded too.
EXACT_US = 8
LAST_BUCKET = 99

BACKEND_PATH = "django_tiercache.backend.TierCache"


def bucket(ns: int) -> int:
    """The latency bucket of a duration in nanoseconds."""
    us = ns // 1000
    if us < EXACT_US:
        return us
    bits = us.bit_length()
    return min((bits - 2) * 4 + ((us >> (bits - 3)) & 3), LAST_BUCKET)


def bucket_bounds(index: int) -> tuple[float, float]:
    """[low, high) of a bucket, in microseconds."""
    if index < EXACT_US:
        return float(index), float(index + 1)
    bits, sub = index // 4 + 2, index % 4
    return float((4 + sub) << (bits - 3)), float((5 + sub) << (bits - 3))


class Recorder(Observer):
    """The counters of one cache in this process, shared by all its threads."""

    def __init__(self, alias: str, tier: str, home: Partition | None, policy: ErrorPolicy):
        self.alias, self.tier, self.policy = alias, tier, policy
        self.home = home  # the partition that keeps the published figures (None: this process)
        self.sink: Any = None  # set by publishing.sink_for()
        self.published: dict[tuple, int] = {}  # the totals shipped so far
        self.sequence = 0  # of this process's last publication (see publishing.py)
        self.unsent: Any = None  # a publication.Batch whose reply never came
        self.publish_lock = threading.Lock()
        self._local = threading.local()
        self._shards: list[tuple[threading.Thread, dict]] = []
        self._retired: dict[tuple, int] = {}  # the counts of threads that ended
        self._shards_lock = threading.Lock()
        self._prefixes: set[str] = set()
        self._hit, self._miss = ("hit", tier), ("miss", tier)
        self._set, self._delete = ("set", tier), ("delete", tier)

    def __repr__(self) -> str:
        return f"<Recorder {self.alias}>"

    # -- the hot path --

    # Every microsecond here is paid by every get; the code is inlined accordingly.

    def _counts(self) -> dict[tuple, Any]:
        try:
            return self._local.counts
        except AttributeError:
            counts: dict[tuple, Any] = {}
            self._local.counts = counts
            with self._shards_lock:
                self._shards.append((threading.current_thread(), counts))
            return counts

    def read(self, made_keys: list[str], found: int) -> None:
        """`made_keys` were looked up, `found` of them were there."""
        asked = len(made_keys)
        try:
            counts = self._local.counts
        except AttributeError:
            counts = self._counts()
        if found:
            counts[self._hit] = counts.get(self._hit, 0) + found
        if asked > found:
            counts[self._miss] = counts.get(self._miss, 0) + asked - found

    def l1_hits(self, found: int) -> None:
        """`found` keys were served by the in-process L1 tier."""
        try:
            counts = self._local.counts
        except AttributeError:
            counts = self._counts()
        counts[_L1_HIT] = counts.get(_L1_HIT, 0) + found

    def wrote(self, stored: int) -> None:
        counts = self._counts()
        counts[self._set] = counts.get(self._set, 0) + stored

    def deleted(self, asked: int) -> None:
        counts = self._counts()
        counts[self._delete] = counts.get(self._delete, 0) + asked

    def invalidated(self, tags: tuple[str, ...]) -> None:
        """Count each tag under its prefix: "shop.product:7" counts for "shop.product"."""
        counts = self._counts()
        for tag in tags:
            key = ("inv", self._prefix(tag.partition(":")[0]))
            counts[key] = counts.get(key, 0) + 1

    def sampled(self, consistent: bool) -> None:
        counts = self._counts()
        key = ("cons", "ok" if consistent else "stale")
        counts[key] = counts.get(key, 0) + 1

    def _prefix(self, prefix: str) -> str:
        if prefix in self._prefixes:
            return prefix
        if len(self._prefixes) >= MAX_TAG_PREFIXES:
            return OTHER_PREFIX
        self._prefixes.add(prefix)
        return prefix

    def called(self, outcome: Outcome, ns: int, trips_before: int) -> None:
        """One call to a partition ended after `ns` nanoseconds."""
        partition = outcome.partition
        try:
            counts = self._local.counts
        except AttributeError:
            counts = self._counts()
        if partition.breaker.trips != trips_before:
            key: tuple = ("trip", partition.name)
            counts[key] = counts.get(key, 0) + 1
        if outcome.error is not None and isinstance(outcome.error, PartitionUnavailable):
            return  # refused by an open breaker: nothing was sent, nothing to time
        key = (outcome.operation, partition.name)
        histogram = counts.get(key)
        if histogram is None:
            histogram = counts[key] = [0] * (LAST_BUCKET + 2)
        us = ns // 1000  # bucket(ns), inlined
        if us >= EXACT_US:
            bits = us.bit_length()
            us = min((bits - 2) * 4 + ((us >> (bits - 3)) & 3), LAST_BUCKET)
        histogram[us] += 1
        histogram[-1] += ns

    def forked(self) -> None:
        """In a forked child: the parent publishes what was counted so far, not us.

        That includes a publication the parent could not confirm: it is the
        parent's to send again. The child publishes as a new process.
        """
        # Another thread of the parent may have held these locks at the fork.
        self._shards_lock, self.publish_lock = threading.Lock(), threading.Lock()
        self.published = self.totals()
        self.sequence, self.unsent = 0, None

    # -- summing --

    def totals(self) -> dict[tuple, int]:
        """Everything counted in this process so far, every thread and the error policy."""
        with self._shards_lock:
            live = []
            for thread, counts in self._shards:
                if thread.is_alive():
                    live.append((thread, counts))
                else:  # it can count no more: fold it in, forget the thread
                    _add_into(self._retired, _flatten(counts.copy()))
            self._shards = live
            total = dict(self._retired)
            for _, counts in live:
                _add_into(total, _flatten(counts.copy()))
        for (event, partition), count in dict(self.policy.counts).items():
            kind, _, operation = event.partition(":")
            key = ("err", operation, partition) if kind == "error" else ("event", event, partition)
            total[key] = total.get(key, 0) + count
        return total


class NullRecorder(Observer):
    """What ``recorder_of`` answers for a cache without statistics: nothing is kept."""

    alias = ""
    sink = None


NULL = NullRecorder()


def alias_of(location: Any, params: dict[str, Any]) -> str | None:
    """The CACHES alias a backend was built from: Django does not tell the backend."""
    for alias, entry in getattr(settings, "CACHES", {}).items():
        rest = {k: v for k, v in entry.items() if k not in ("BACKEND", "LOCATION")}
        if entry.get("LOCATION", "") == location and rest == params:
            return alias
    return None


def recorder_of(cache: Any) -> Recorder | NullRecorder:
    """The recorder a TierCache reports to (NULL when it keeps no statistics)."""
    for observer in observers_of(cache):
        if isinstance(observer, Recorder):
            return observer
    return NULL


def tiercache_aliases() -> list[str]:
    """The aliases of settings.CACHES that are TierCaches, in settings order."""
    aliases = []
    for alias, entry in settings.CACHES.items():
        backend = entry.get("BACKEND", "")
        if backend == BACKEND_PATH or _is_subclass(import_string(backend), TierCache):
            aliases.append(alias)
    return aliases


def _is_subclass(cls: Any, base: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, base)


def _add_into(total: dict[tuple, int], counts: dict[tuple, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def _flatten(counts: dict[tuple, Any]) -> dict[tuple, int]:
    """Histograms (operation, partition) -> ("lat", ..., bucket) and ("ns", ...) counts."""
    flat: dict[tuple, int] = {}
    for key, value in counts.items():
        if type(value) is not list:
            flat[key] = value
            continue
        operation, partition = key
        for index, count in enumerate(value[:-1]):
            if count:
                flat[("lat", operation, partition, index)] = count
        flat[("ns", operation, partition)] = value[-1]
    return flat
