"""The observer seam: what a cache reports to the features watching it.

The storage core never imports a feature. A feature that wants to watch a
cache (statistics count hits and latencies, hot keys sample reads) provides an
*observer factory*: a callable that is given a ``Building`` (what the cache
being built is made of) and returns an ``Observer``, or None to stay out. The
factories are named by dotted path in ``TIERCACHE["OBSERVERS"]`` and called
once per backend instance::

    TIERCACHE = {"OBSERVERS": [
        "django_tiercache.stats.collection.observe",
        "django_tiercache.hotkeys.record.observe",
        "myproject.audit.observe",       # your own: any callable(Building) -> Observer | None
    ]}

The hot path calls one observer: ``combine`` hands back the NULL observer, the
only one, or a fan-out, so a cache nobody watches pays one no-op call per
operation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from .failures import ErrorPolicy
    from .partition import Outcome, Partition


@dataclass(frozen=True)
class Building:
    """What an observer factory is told about the cache being built."""

    location: Any  # LOCATION as written in CACHES (a string or a list)
    params: dict[str, Any]  # the rest of the CACHES entry (OPTIONS, KEY_PREFIX ...)
    options: Any  # options.Config: the parsed, validated OPTIONS
    key_prefix: str
    partitions: list[Partition]
    policy: ErrorPolicy


class Observer:
    """Base class of observers: every method does nothing; override what you watch.

    Methods run on the caller's thread, inside cache operations: they must be
    cheap and must not raise.
    """

    def read(self, made_keys: list[str], found: int) -> None:
        """A read asked for `made_keys` (full cache keys); `found` of them were there."""

    def l1_hits(self, found: int) -> None:
        """`found` keys were served by the in-process L1 tier (not part of read())."""

    def wrote(self, stored: int) -> None:
        """A write stored `stored` entries."""

    def deleted(self, asked: int) -> None:
        """A delete asked for `asked` keys."""

    def invalidated(self, tags: tuple[str, ...]) -> None:
        """``invalidate_tags`` or ``lock_tags`` invalidated `tags`."""

    def called(self, outcome: Outcome, elapsed_ns: int, trips: int) -> None:
        """One call to one partition ended (`trips`: its breaker's trips before it)."""

    def sampled(self, consistent: bool) -> None:
        """A sampled hit was checked against its source (orm/consistency.py)."""


NULL = Observer()


class Observers(Observer):
    """Several observers as one: each hears every event, in order."""

    def __init__(self, observers: Iterable[Observer]):
        self.observers = tuple(observers)

    def __repr__(self) -> str:
        return f"<Observers {list(self.observers)}>"

    def read(self, made_keys: list[str], found: int) -> None:
        for observer in self.observers:
            observer.read(made_keys, found)

    def l1_hits(self, found: int) -> None:
        for observer in self.observers:
            observer.l1_hits(found)

    def wrote(self, stored: int) -> None:
        for observer in self.observers:
            observer.wrote(stored)

    def deleted(self, asked: int) -> None:
        for observer in self.observers:
            observer.deleted(asked)

    def invalidated(self, tags: tuple[str, ...]) -> None:
        for observer in self.observers:
            observer.invalidated(tags)

    def called(self, outcome: Outcome, elapsed_ns: int, trips: int) -> None:
        for observer in self.observers:
            observer.called(outcome, elapsed_ns, trips)

    def sampled(self, consistent: bool) -> None:
        for observer in self.observers:
            observer.sampled(consistent)


def combine(observers: Iterable[Observer | None]) -> Observer:
    """One observer for all of `observers` (None entries are left out)."""
    present = [o for o in observers if o is not None and o is not NULL]
    if not present:
        return NULL
    return present[0] if len(present) == 1 else Observers(present)


def watching_calls(observers: Iterable[Observer | None]) -> Observer | None:
    """The observer partitions report their calls to, or None when none listens.

    Partitions skip the report (and its clock read) when this is None.
    """
    listening = [o for o in observers if o is not None and type(o).called is not Observer.called]
    return combine(listening) if listening else None


ObserverFactory = Callable[[Building], "Observer | None"]


def factories(paths: Iterable[str]) -> tuple[ObserverFactory, ...]:
    """The factories named by dotted `paths` (imported once per list of paths).

    Raises ImproperlyConfigured naming the path that cannot be imported; the
    system check tiercache.E008 reports the same at start-up.
    """
    return _imported(tuple(paths))


@lru_cache(maxsize=8)
def _imported(paths: tuple[str, ...]) -> tuple[ObserverFactory, ...]:
    found = []
    for path in paths:
        problem = factory_problem(path)
        if problem:
            raise ImproperlyConfigured(
                f"tiercache.E008: {problem} HINT: Fix or remove it in TIERCACHE['OBSERVERS']."
            )
        found.append(import_string(path))
    return tuple(found)


def factory_problem(path: Any) -> str | None:
    """Why `path` names no observer factory, or None when it does."""
    if not isinstance(path, str):
        return f"TIERCACHE['OBSERVERS'] holds {path!r}, not a dotted path."
    try:
        factory = import_string(path)
    except ImportError as exc:
        return f"TIERCACHE['OBSERVERS'] names {path!r}, which cannot be imported ({exc})."
    if not callable(factory):
        return f"TIERCACHE['OBSERVERS'] names {path!r}, which is not callable."
    return None


def observers_of(cache: Any) -> tuple[Observer, ...]:
    """The observers a TierCache was built with."""
    return tuple(getattr(cache, "_observers", ()))
