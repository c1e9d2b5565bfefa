"""App-wide settings: the TIERCACHE dict in Django settings, read lazily.

Per-cache options live in CACHES[alias]["OPTIONS"] instead (see storage/options.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Seconds a write lock (taken when a transaction writes a registered model)
    # lasts at most if the transaction never commits; see orm/transactions.py.
    "WRITE_LOCK_TIMEOUT": 30,
    # Seconds get_object() and cached_queryset() keep entries when the model's
    # registration gives no timeout: None means the cache's default TIMEOUT.
    "MODEL_TIMEOUT": None,
    # Statistics (see stats/ and the README, "Statistics"): collect them at all;
    # seconds between two publications of a process's counters to Redis; the
    # targets the admin page checks; a bearer token the metrics/ view accepts;
    # whether metrics/ answers anonymous requests at all (by default it wants the
    # token or a logged-in user with django_tiercache.view_cachestats).
    "STATS": True,
    "STATS_INTERVAL": 5.0,
    "STATS_TARGETS": {"HIT_RATE": 0.80, "MISS_RATE": 0.20, "P95_MS": 10.0},
    "STATS_METRICS_TOKEN": None,
    "STATS_METRICS_PUBLIC": False,
    # Observer factories every TierCache is built with, by dotted path (see
    # storage/observers.py): each watches the cache's reads, writes and calls.
    # Statistics (on when STATS is) and hot keys (on when a cache's
    # OPTIONS["HOT_KEYS"] is) plug in here; leave one out to keep it out of the
    # read path entirely, add your own to watch caches too.
    "OBSERVERS": [
        "django_tiercache.stats.observer.observe",
        "django_tiercache.hotkeys.record.observe",
    ],
    # The consistency sampler (orm/consistency.py): the share of get_object hits
    # re-read from the database in the background (0: off; 0.0001: one in 10,000),
    # and the seconds after the read it waits before checking (an invalidation
    # in flight is not a stale entry).
    "CONSISTENCY_SAMPLE_RATE": 0.0,
    "CONSISTENCY_GRACE": 2.0,
    # Write-behind (write_behind/settings.py has the keys and their defaults).
    "WRITE_BEHIND": {},
}


# One line of help per TIERCACHE key (docs/ reference).
SETTING_HELP: dict[str, str] = {
    "WRITE_LOCK_TIMEOUT": (
        "seconds a write lock (taken when a transaction writes a registered model) lasts at "
        "most if the transaction never commits; keep it well above TAG_LEASE "
        "(`tiercache.E015`)"
    ),
    "MODEL_TIMEOUT": (
        "seconds `get_object()` and `cached_queryset()` keep entries when the registration "
        "gives none; None: the cache's TIMEOUT"
    ),
    "STATS": "collect statistics at all",
    "STATS_INTERVAL": "seconds between two publications of a process's counters to Redis",
    "STATS_TARGETS": (
        "the targets the statistics page checks (`HIT_RATE`, `MISS_RATE` as fractions, `P95_MS`)"
    ),
    "STATS_METRICS_TOKEN": "a bearer token the Prometheus view accepts",
    "STATS_METRICS_PUBLIC": "whether the Prometheus view answers anonymous requests",
    "OBSERVERS": (
        "dotted paths of the observer factories every TierCache is built with (statistics, "
        "hot keys, your own)"
    ),
    "CONSISTENCY_SAMPLE_RATE": (
        "share of `get_object` hits re-read from the database in the background (0: off)"
    ),
    "CONSISTENCY_GRACE": (
        "seconds after a sampled read before it is checked (an invalidation in flight is not "
        "a stale entry)"
    ),
    "WRITE_BEHIND": "the write-behind queue's settings (below)",
}


@lru_cache(maxsize=1)
def get_config() -> dict[str, Any]:
    config = dict(DEFAULTS)
    config.update(getattr(settings, "TIERCACHE", {}))
    return config


@receiver(setting_changed)
def _clear(setting: str, **kwargs: Any) -> None:
    if setting == "TIERCACHE":
        get_config.cache_clear()


def did_you_mean(name: object, known: Iterable[str]) -> str:
    """The sentence " Did you mean 'X'?" for the known name closest to a misspelt one, or "".

    Every check that refuses an unknown name says which one was probably meant:
    a list of thirty valid keys hides the one that differs by a letter.
    """
    known = list(known)
    if not isinstance(name, str) or name in known:
        return ""
    by_upper = {k.upper(): k for k in known}
    close = difflib.get_close_matches(name.upper(), list(by_upper), n=1, cutoff=0.6)
    return f" Did you mean {by_upper[close[0]]!r}?" if close else ""
