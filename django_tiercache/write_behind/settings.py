"""Write-behind settings: TIERCACHE["WRITE_BEHIND"], completed from DEFAULTS.

Validated when read (a bad value raises ImproperlyConfigured naming it) and by
the system check tiercache.E010 (checks.py), which reports the same problems.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from .. import conf
from ..storage.options import parse as parse_cache_options
from .server import JOURNAL_SCHEMES, SOCKET_TIMEOUT, scheme

DEFAULTS: dict[str, Any] = {
    # Rows one drain transaction writes at most; reaching this many pending
    # writes also sends a drain trigger at once.
    "BATCH_SIZE": 500,
    # Seconds between two scheduled drains (the Celery beat entry, tasks.py).
    "FLUSH_INTERVAL": 5.0,
    # Failed attempts before a row becomes a dead letter; first retry delay (s),
    # doubled after every failure.
    "MAX_RETRIES": 5,
    "RETRY_BACKOFF": 1.0,
    # Rows pending at most; past it write_behind.save() takes ON_UNAVAILABLE.
    "MAX_PENDING": 100_000,
    # "save": write to the database at once when the journal is unreachable or
    # full; "raise": raise WriteBehindUnavailable instead.
    "ON_UNAVAILABLE": "save",
    # Seconds a drainer holds the rows it claimed; after that (the worker died)
    # another drainer takes them again.
    "CLAIM_TIMEOUT": 60.0,
    # Where the journal lives: a redis://, rediss://, unix://, redis+sentinel://
    # or redis+cluster:// URL, or None for the first Redis partition of the CACHE
    # alias; the keys' prefix (a Redis hash tag).
    "REDIS_URL": None,
    "CACHE": "default",
    "KEY_PREFIX": "tiercache:wb",
    # Replicas that must confirm an enqueue (Redis WAIT) before write_behind.save()
    # returns, else ON_UNAVAILABLE is taken; None: 1 on Sentinel and Cluster, 0 on
    # a plain Redis. Seconds to wait for them (below the journal's 5 s socket timeout).
    "REPLICAS": None,
    "REPLICA_TIMEOUT": 0.5,
    # Send a Celery drain trigger when BATCH_SIZE writes are pending (needs a
    # configured Celery app with a broker).
    "TRIGGER": True,
}

_POSITIVE_INT = ("BATCH_SIZE", "MAX_PENDING")
_POSITIVE_NUMBER = ("FLUSH_INTERVAL", "CLAIM_TIMEOUT")


def configured() -> dict[str, Any]:
    """The raw setting merged over DEFAULTS (unknown keys kept, for the check)."""
    given = conf.get_config().get("WRITE_BEHIND") or {}
    return {**DEFAULTS, **given} if isinstance(given, dict) else dict(DEFAULTS)


def get() -> dict[str, Any]:
    """The validated settings; ImproperlyConfigured names the first bad value."""
    found = problems()
    if found:
        raise ImproperlyConfigured(f"tiercache.E010: {found[0]}")
    return configured()


def problems() -> list[str]:
    """Every bad WRITE_BEHIND value, each a sentence that names it and the fix."""
    given = conf.get_config().get("WRITE_BEHIND", {})
    if not isinstance(given, dict):
        return [f"TIERCACHE['WRITE_BEHIND'] must be a dict, not {type(given).__name__}."]
    found = [
        f"Unknown TIERCACHE['WRITE_BEHIND'] key {key!r}; known: {', '.join(sorted(DEFAULTS))}."
        for key in given
        if key not in DEFAULTS
    ]
    config = {**DEFAULTS, **given}
    for key in _POSITIVE_INT:
        if not _is_int(config[key]) or config[key] < 1:
            found.append(_bad(key, config[key], "a positive integer"))
    if not _is_int(config["MAX_RETRIES"]) or config["MAX_RETRIES"] < 0:
        found.append(_bad("MAX_RETRIES", config["MAX_RETRIES"], "an integer >= 0"))
    for key in _POSITIVE_NUMBER:
        if not _is_number(config[key]) or config[key] <= 0:
            found.append(_bad(key, config[key], "a positive number of seconds"))
    if not _is_number(config["RETRY_BACKOFF"]) or config["RETRY_BACKOFF"] < 0:
        found.append(_bad("RETRY_BACKOFF", config["RETRY_BACKOFF"], "a number of seconds >= 0"))
    if config["ON_UNAVAILABLE"] not in ("save", "raise"):
        found.append(_bad("ON_UNAVAILABLE", config["ON_UNAVAILABLE"], "'save' or 'raise'"))
    url = config["REDIS_URL"]
    if not _url_ok(url):
        wanted = "a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL"
        found.append(_bad("REDIS_URL", url, wanted + ", or None"))
    found += _replica_problems(config)
    if not isinstance(config["KEY_PREFIX"], str) or not config["KEY_PREFIX"]:
        found.append(_bad("KEY_PREFIX", config["KEY_PREFIX"], "a non-empty string"))
    if url is None and config["CACHE"] not in getattr(django_settings, "CACHES", {}):
        found.append(_bad("CACHE", config["CACHE"], "an alias in CACHES (or set REDIS_URL)"))
    return found


def _url_ok(url: Any) -> bool:
    """None, or one URL the cache's own parser takes, of a kind that can hold a journal."""
    if url is None:
        return True
    return isinstance(url, str) and _journal_url_ok(url)


@functools.lru_cache(maxsize=64)
def _journal_url_ok(url: str) -> bool:
    # Cached: the settings are validated at every read, so at every save.
    if scheme(url) not in JOURNAL_SCHEMES:
        return False
    parsed = parse_cache_options(url, {})
    servers = {u.partition("#")[0] for u in parsed.urls}  # a cluster: one per slot group
    return not any(problem.is_error for problem in parsed.problems) and len(servers) == 1


def _replica_problems(config: dict[str, Any]) -> list[str]:
    found = []
    given = config["REPLICAS"]
    if given is not None and (not _is_int(given) or given < 0):
        found.append(_bad("REPLICAS", given, "an integer >= 0, or None (1 on Sentinel/Cluster)"))
    timeout = config["REPLICA_TIMEOUT"]
    if not _is_number(timeout) or not 0 < timeout < SOCKET_TIMEOUT:
        wanted = f"a number of seconds above 0 and below {SOCKET_TIMEOUT:g} (the socket timeout)"
        found.append(_bad("REPLICA_TIMEOUT", timeout, wanted))
    return found


def _bad(key: str, value: Any, wanted: str) -> str:
    return f"TIERCACHE['WRITE_BEHIND']['{key}'] must be {wanted}, got {value!r}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
