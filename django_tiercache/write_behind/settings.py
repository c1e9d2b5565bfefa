"""Write-behind settings: TIERCACHE["WRITE_BEHIND"], completed from DEFAULTS.

Validated when read (a bad value raises ImproperlyConfigured naming it) and by
the system check tiercache.E010 (checks.py), which reports the same problems.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

from django.apps import apps
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

from .. import conf
from ..storage.options import DEFAULTS as CACHE_DEFAULTS
from ..storage.options import parse as parse_cache_options
from ..storage.options import redis_scheme_url
from .server import JOURNAL_SCHEMES, scheme

CACHE_SOCKET_TIMEOUT = CACHE_DEFAULTS["SOCKET_TIMEOUT"]
CACHE_BREAKER_COOLDOWN = CACHE_DEFAULTS["BREAKER_COOLDOWN"]

DEFAULTS: dict[str, Any] = {
    # Rows one drain transaction writes at most; reaching this many pending
    # writes also sends a drain trigger at once.
    "BATCH_SIZE": 500,
    # Seconds between two scheduled drains (the Celery beat entry, tasks.py).
    "FLUSH_INTERVAL": 5.0,
    # Retries after a row's first failed attempt (so MAX_RETRIES + 1 attempts in
    # all) before it becomes a dead letter; first retry delay (s), doubled after
    # every failure.
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
    # alias; the keys' prefix (a Redis hash tag). None: "<the CACHE alias's
    # KEY_PREFIX>:tiercache:wb", so that two sites on one Redis, each with its own
    # cache prefix, never share (and drain) one journal.
    "REDIS_URL": None,
    "CACHE": "default",
    "KEY_PREFIX": None,
    # Seconds a journal call may take before the journal counts as unreachable
    # (then ON_UNAVAILABLE, and its breaker stays open for the cache's
    # BREAKER_COOLDOWN); None: the CACHE alias's SOCKET_TIMEOUT.
    "SOCKET_TIMEOUT": None,
    # Replicas that must confirm an enqueue (Redis WAIT) before write_behind.save()
    # returns, else ON_UNAVAILABLE is taken; None: 1 on Sentinel and Cluster, 0 on
    # a plain Redis. Seconds to wait for them, below SOCKET_TIMEOUT (None: 0.5 s,
    # or half SOCKET_TIMEOUT if that is less).
    "REPLICAS": None,
    "REPLICA_TIMEOUT": None,
    # Send a Celery drain trigger when BATCH_SIZE writes are pending (needs a
    # configured Celery app with a broker).
    "TRIGGER": True,
}

DEFAULT_JOURNAL_PREFIX = "tiercache:wb"
_POSITIVE_INT = ("BATCH_SIZE", "MAX_PENDING")
_POSITIVE_NUMBER = ("FLUSH_INTERVAL", "CLAIM_TIMEOUT")


# One line of help per TIERCACHE['WRITE_BEHIND'] key (docs/ reference).
SETTING_HELP: dict[str, str] = {
    "BATCH_SIZE": "rows per drain transaction; this many pending sends a trigger",
    "FLUSH_INTERVAL": "seconds between scheduled drains (`beat_schedule()`)",
    "MAX_RETRIES": "retries after a row's first failed attempt before it becomes a dead letter",
    "RETRY_BACKOFF": "seconds before the first retry, doubled after each failure",
    "MAX_PENDING": "rows pending at most; more take `ON_UNAVAILABLE`",
    "ON_UNAVAILABLE": (
        'journal unreachable, full, or not confirmed by `REPLICAS` replicas: `"save"` at '
        'once, or `"raise"`'
    ),
    "CLAIM_TIMEOUT": "seconds a drain holds its rows; then another may take them",
    "REDIS_URL": (
        "the journal's Redis (`redis://`, `rediss://`, `unix://`, `redis+sentinel://`, "
        "`redis+cluster://`); None: the first Redis partition of `CACHE`"
    ),
    "CACHE": "the cache alias whose Redis holds the journal",
    "KEY_PREFIX": (
        "the journal keys' hash tag; None: `\"<CACHE's KEY_PREFIX>:tiercache:wb\"`, or "
        '`"tiercache:wb"` without one (`tiercache.W010`)'
    ),
    "SOCKET_TIMEOUT": (
        "seconds a journal call may take, then `ON_UNAVAILABLE` and the breaker; None: the "
        "`CACHE` alias's `SOCKET_TIMEOUT`"
    ),
    "REPLICAS": (
        "replicas that must confirm an enqueue (`WAIT`); None: 1 on Sentinel and Cluster, 0 "
        "on a plain Redis"
    ),
    "REPLICA_TIMEOUT": (
        "seconds to wait for them (above 0, below `SOCKET_TIMEOUT`); None: 0.5, or half "
        "`SOCKET_TIMEOUT` if less; then `ON_UNAVAILABLE`"
    ),
    "TRIGGER": "send a drain trigger at `BATCH_SIZE` pending rows",
}


def configured() -> dict[str, Any]:
    """The raw setting merged over DEFAULTS (unknown keys kept, for the check), with
    KEY_PREFIX, SOCKET_TIMEOUT and BREAKER_COOLDOWN filled in from the CACHE alias."""
    given = conf.get_config().get("WRITE_BEHIND") or {}
    config = {**DEFAULTS, **given} if isinstance(given, dict) else dict(DEFAULTS)
    cache = getattr(django_settings, "CACHES", {}).get(config["CACHE"], {})
    cache = cache if isinstance(cache, dict) else {}
    if config["KEY_PREFIX"] is None:
        site = cache.get("KEY_PREFIX") or ""
        config["KEY_PREFIX"] = (
            f"{site}:{DEFAULT_JOURNAL_PREFIX}" if site else DEFAULT_JOURNAL_PREFIX
        )
    options: dict[str, Any] = cache["OPTIONS"] if isinstance(cache.get("OPTIONS"), dict) else {}
    if config["SOCKET_TIMEOUT"] is None:
        config["SOCKET_TIMEOUT"] = options.get("SOCKET_TIMEOUT", CACHE_SOCKET_TIMEOUT)
    config["BREAKER_COOLDOWN"] = options.get("BREAKER_COOLDOWN", CACHE_BREAKER_COOLDOWN)
    if config["REPLICA_TIMEOUT"] is None and _is_number(config["SOCKET_TIMEOUT"]):
        config["REPLICA_TIMEOUT"] = min(0.5, config["SOCKET_TIMEOUT"] / 2)
    config["REDIS_URL"] = redis_scheme_url(config["REDIS_URL"])  # valkey:// as redis://
    return config


def get() -> dict[str, Any]:
    """The validated settings; ImproperlyConfigured names the first bad value."""
    found = problems()
    if found and not apps.ready:
        # Read while the project is still being imported (a Celery app calling
        # beat_schedule() at module level): raising here is a traceback that
        # hides every other problem from `manage.py check`, which reports this
        # one as tiercache.E010. Until then the defaults stand in for bad values.
        logging.getLogger(__name__).warning("tiercache.E010: %s", found[0])
        given = conf.get_config().get("WRITE_BEHIND")
        given = given if isinstance(given, dict) else {}
        good = {k: v for k, v in given.items() if k in DEFAULTS and not problems({k: v})}
        return {**DEFAULTS, **good}
    if found:
        raise ImproperlyConfigured(f"tiercache.E010: {found[0]}")
    return configured()


def problems(given: Any = None) -> list[str]:
    """Every bad WRITE_BEHIND value (of the setting, or of `given`), each a
    sentence that names it and the fix."""
    if given is None:
        given = conf.get_config().get("WRITE_BEHIND", {})
    if not isinstance(given, dict):
        return [f"TIERCACHE['WRITE_BEHIND'] must be a dict, not {type(given).__name__}."]
    found = [
        f"Unknown TIERCACHE['WRITE_BEHIND'] key {key!r}; known: {', '.join(sorted(DEFAULTS))}."
        for key in given
        if key not in DEFAULTS
    ]
    config = configured()
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


def shared_journal() -> list[str]:
    """A sentence if write-behind is in use under the bare default journal prefix: any other
    project on the same Redis with the same defaults would share (and quarantine) it."""
    from ..orm.registry import registered_models, registration_for

    if not any(registration_for(m).write_behind for m in registered_models()):
        return []
    given = conf.get_config().get("WRITE_BEHIND") or {}
    if not isinstance(given, dict) or given.get("KEY_PREFIX") is not None:
        return []
    if configured()["KEY_PREFIX"] != DEFAULT_JOURNAL_PREFIX:
        return []
    return [
        f"The write-behind journal uses the default prefix {DEFAULT_JOURNAL_PREFIX!r} because "
        f"the {configured()['CACHE']!r} cache has no KEY_PREFIX: another project on the same "
        f"Redis with the same defaults would share this journal, and each would quarantine "
        f"the other's rows as foreign (they would never land)."
    ]


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
    socket_timeout = config["SOCKET_TIMEOUT"]
    if not _is_number(socket_timeout) or not 0 < socket_timeout <= 60:
        found.append(_bad("SOCKET_TIMEOUT", socket_timeout, "a number of seconds in (0, 60]"))
        return found
    timeout = config["REPLICA_TIMEOUT"]
    if not _is_number(timeout) or not 0 < timeout < socket_timeout:
        wanted = f"a number of seconds above 0 and below {socket_timeout:g} (SOCKET_TIMEOUT)"
        found.append(_bad("REPLICA_TIMEOUT", timeout, wanted))
    return found


def _bad(key: str, value: Any, wanted: str) -> str:
    return f"TIERCACHE['WRITE_BEHIND']['{key}'] must be {wanted}, got {value!r}."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (NaN compares false with everything, so it must be named)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
