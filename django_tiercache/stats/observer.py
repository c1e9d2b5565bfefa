"""The statistics observer factory: one recorder per cache per process.

``observe`` is named in TIERCACHE["OBSERVERS"] (django_tiercache/conf.py); the
backend calls it for every instance it builds and reports to what it returns.
"""

from __future__ import annotations

import threading

from ..storage.failures import ErrorPolicy
from ..storage.observers import Building
from ..storage.partition import Partition
from . import publishing
from .collection import Recorder, alias_of
from .conf import get_config

_recorders: dict[tuple, Recorder] = {}
_recorders_lock = threading.Lock()


def observe(building: Building) -> Recorder | None:
    """The observer factory of statistics: the recorder of the cache being built.

    One recorder per cache per process: Django builds a backend instance per
    thread, and they all count into the same recorder. None when TIERCACHE["STATS"]
    is off.
    """
    if not get_config()["STATS"]:
        return None
    partitions, policy = building.partitions, building.policy
    alias = alias_of(building.location, building.params)
    names = tuple(p.name for p in partitions)
    identity = (alias, names, building.params.get("KEY_PREFIX", ""))
    with _recorders_lock:
        recorder = _recorders.get(identity)
        if recorder is None or recorder.policy is not policy:
            recorder = _recorders[identity] = _new_recorder(alias, partitions, policy)
    return recorder


def _new_recorder(alias: str | None, partitions: list[Partition], policy: ErrorPolicy) -> Recorder:
    redis = [p for p in partitions if not p.url.startswith("memory:")]
    # Only caches named in settings.CACHES share their figures through Redis:
    # those are the ones the admin page shows, and a cache built by hand (tests,
    # scripts) must not write into a server it was not configured for.
    home = redis[0] if redis and alias is not None else None
    recorder = Recorder(alias or "(unnamed)", "redis" if redis else "memory", home, policy)
    publishing.register(recorder)
    return recorder
