"""System checks for every TierCache in CACHES (ids tiercache.E001..., tiercache.W001...)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.cache import caches
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .backend import MisconfiguredCache
from .conf import DEFAULTS, did_you_mean
from .orm.transactions import QUERY_ROOM
from .stats import conf as stats_conf
from .storage.observers import factory_problem
from .storage.options import CLUSTER_SCHEME, CONNECTION_OPTIONS, SENTINEL_SCHEME, parse
from .storage.options import DEFAULTS as OPTION_DEFAULTS
from .write_behind import settings as write_behind_settings

BACKEND = "django_tiercache.backend.TierCache"
# The keys Django reads from a CACHES entry; a TierCache reads its own inside OPTIONS.
CACHE_KEYS = ("BACKEND", "LOCATION", "OPTIONS", "TIMEOUT", "KEY_PREFIX", "VERSION", "KEY_FUNCTION")


# Every check id this app reports, with what it means (the reference in docs/ is
# generated from these; tests/test_docs.py finds every id in the code here).
CHECK_IDS: dict[str, str] = {
    "E001": "a bad LOCATION (no partition, an unsupported scheme, a bad URL, a partition twice)",
    "E002": "an unknown OPTIONS key (with the known name it most resembles, or advice)",
    "E003": "a bad OPTIONS value, or a class path that cannot be imported",
    "E004": "PARTITION_NAMES that do not match LOCATION",
    "E005": "TIERCACHE is not a dict, or names an unknown key",
    "E006": "a bad statistics setting (STATS_INTERVAL, STATS_TARGETS: fractions, not percentages)",
    "E007": "register(parents=[...]) names something that is not a foreign key",
    "E008": "an observer factory in TIERCACHE['OBSERVERS'] that cannot be imported or built",
    "E010": "a bad TIERCACHE['WRITE_BEHIND'] value",
    "E011": "write-behind with no Redis for its journal (memory:// only, no REDIS_URL)",
    "E012": "a cache that cannot be built for a reason no other check names",
    "E013": "a key beside OPTIONS that belongs inside it, or that nothing reads",
    "E014": "a bad consistency sampler setting (CONSISTENCY_SAMPLE_RATE, CONSISTENCY_GRACE)",
    "E015": "WRITE_LOCK_TIMEOUT not comfortably above TAG_LEASE plus the socket timeouts",
    "E016": "the URLconf includes django_tiercache.urls without the prometheus extra installed",
    "W001": "the pickle serializer with SIGNED off",
    "W002": "another cache alias on the same Redis database with the same KEY_PREFIX",
    "W010": "the write-behind journal under the default prefix, shared by every site on that Redis",
    "W011": "a django-redis setting TierCache does not follow as django-redis would",
    "W012": "two Redis partitions without a witness: a restart pauses tagged writes on both",
}


@register(Tags.caches)
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    # A bad TIERCACHE setting stops every cache's build; check_app_settings names it.
    app_settings_ok = not any(m.is_serious() for m in check_app_settings())
    for alias, config in getattr(settings, "CACHES", {}).items():
        if config.get("BACKEND") != BACKEND:
            continue
        messages += _entry_keys(alias, config) + _shared_databases(alias, config)
        messages += _django_redis_settings(alias, config)
        problems = parse(config.get("LOCATION", ""), config.get("OPTIONS")).problems
        for problem in problems:
            kind = Error if problem.is_error else Warning
            messages.append(
                kind(
                    problem.msg,
                    hint=problem.hint,
                    obj=f"CACHES[{alias!r}]",
                    id=f"tiercache.{problem.id}",
                )
            )
        if app_settings_ok and not any(p.is_error for p in problems):
            messages += _unbuilt(alias)
    return messages


def _entry_keys(alias: str, config: dict[str, Any]) -> list[CheckMessage]:
    """tiercache.E013: a key beside OPTIONS that Django and TierCache both ignore,
    most often an option written one level too high."""
    messages: list[CheckMessage] = []
    for key in config:
        if key in CACHE_KEYS:
            continue
        if key in OPTION_DEFAULTS or key in CONNECTION_OPTIONS:
            msg = f"{key!r} is an OPTIONS key, given beside OPTIONS, where it is ignored."
            hint = f"Move it into OPTIONS: 'OPTIONS': {{{key!r}: ...}}."
        else:
            near = did_you_mean(key, [*CACHE_KEYS, *OPTION_DEFAULTS, *CONNECTION_OPTIONS])
            msg = f"Unknown key {key!r} in the CACHES entry, where it is ignored.{near}"
            hint = (
                f"A CACHES entry takes {', '.join(CACHE_KEYS)}; the TierCache options "
                "go inside OPTIONS (see the documentation, Reference: Options)."
            )
        messages.append(Error(msg, hint=hint, obj=f"CACHES[{alias!r}]", id="tiercache.E013"))
    return messages


def _django_redis_settings(alias: str, config: dict[str, Any]) -> list[CheckMessage]:
    """tiercache.W011: a django-redis setting a migrating project kept that TierCache
    does not follow as django-redis would. (DJANGO_REDIS_SCAN_ITERSIZE,
    DJANGO_REDIS_CLOSE_CONNECTION and DJANGO_REDIS_CONNECTION_FACTORY are followed.)"""
    messages: list[CheckMessage] = []
    raise_errors = bool((config.get("OPTIONS") or {}).get("RAISE_ERRORS", False))
    ignore = getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", None)
    if ignore is not None and bool(ignore) == raise_errors:
        does = "raises them" if raise_errors else "turns them into misses and skipped writes"
        messages.append(
            Warning(
                f"DJANGO_REDIS_IGNORE_EXCEPTIONS is {ignore!r}, but this cache {does} "
                "(OPTIONS['RAISE_ERRORS'] decides, not that setting).",
                hint=f"Set OPTIONS['RAISE_ERRORS'] to {not ignore!r} for the same behaviour, "
                "and remove DJANGO_REDIS_IGNORE_EXCEPTIONS. Failures are logged either way.",
                obj=f"CACHES[{alias!r}]",
                id="tiercache.W011",
            )
        )
    if getattr(settings, "DJANGO_REDIS_LOGGER", None) is not None:
        messages.append(
            Warning(
                "DJANGO_REDIS_LOGGER is not used: TierCache logs to the 'django_tiercache' logger.",
                hint="Configure the 'django_tiercache' logger in LOGGING instead.",
                obj=f"CACHES[{alias!r}]",
                id="tiercache.W011",
            )
        )
    return messages


def _shared_databases(alias: str, config: dict[str, Any]) -> list[CheckMessage]:
    """tiercache.W002: another cache alias on one of this cache's Redis databases
    with the same KEY_PREFIX. Their entries, tags, statistics and bookkeeping then
    share keys: one alias's clear() or invalidation reaches the other's entries."""
    mine = _databases(config)
    prefix = config.get("KEY_PREFIX", "")
    messages: list[CheckMessage] = []
    for other, other_config in getattr(settings, "CACHES", {}).items():
        if other == alias or other_config.get("KEY_PREFIX", "") != prefix:
            continue
        shared = sorted(mine & _databases(other_config))
        if shared:
            messages.append(
                Warning(
                    f"CACHES[{other!r}] uses the same Redis database ({shared[0]}) with "
                    f"the same KEY_PREFIX ({prefix!r}).",
                    hint="Give each cache alias on a shared Redis database a KEY_PREFIX of "
                    "its own (e.g. 'KEY_PREFIX': 'shop'), or another database.",
                    obj=f"CACHES[{alias!r}]",
                    id="tiercache.W002",
                )
            )
    return messages


def _databases(config: dict[str, Any]) -> set[str]:
    """The Redis databases a CACHES entry names, as 'host:port/db' (any backend)."""
    location = config.get("LOCATION", "")
    if config.get("BACKEND") == BACKEND:
        urls = parse(location, config.get("OPTIONS")).urls
    elif isinstance(location, str):
        urls = location.replace(";", ",").split(",")
    else:
        urls = list(location) if isinstance(location, (list, tuple)) else []
    found = set()
    for url in urls:
        if not isinstance(url, str) or "://" not in url:
            continue
        scheme = url.partition("://")[0].lower()
        if scheme == CLUSTER_SCHEME:
            found.add(url.partition("#")[0].rstrip("/") + "/0")  # a cluster has database 0
        elif scheme == SENTINEL_SCHEME:
            found.add(url.partition("#")[0])
        elif scheme in ("redis", "rediss", "unix"):
            found.add(_database(url))
    return found


def _database(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        return url
    if parts.scheme == "unix":
        db = parse_qs(parts.query).get("db", ["0"])[0]
        return f"unix:{parts.path}/{db}"
    host = (parts.hostname or "").lower().replace("localhost", "127.0.0.1")
    db = parts.path.strip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    return f"{host}:{port}/{db}"


def _unbuilt(alias: str) -> list[CheckMessage]:
    """tiercache.E012: the cache could not be built for a reason no other check
    names (TierCache.__new__ made it a MisconfiguredCache)."""
    cache = caches[alias]  # Django's own cache checks have built it already
    if not isinstance(cache, MisconfiguredCache):
        return []
    return [
        Error(
            f"The cache cannot be built: {cache.message}",
            hint="Fix the setting the message names; until then every call to this "
            "cache raises ImproperlyConfigured.",
            obj=f"CACHES[{alias!r}]",
            id="tiercache.E012",
        )
    ]


@register()
def check_app_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The app-wide TIERCACHE setting (see conf.py) names only known keys."""
    configured = getattr(settings, "TIERCACHE", {})
    if not isinstance(configured, dict):
        return [
            Error(
                f"TIERCACHE must be a dict, not {type(configured).__name__}.",
                hint="Write TIERCACHE = {...} with keys from the documentation, Reference: "
                "Settings.",
                id="tiercache.E005",
            )
        ]
    unknown = [
        Error(
            f"Unknown TIERCACHE key {key!r}.{did_you_mean(key, DEFAULTS)}",
            hint=f"Remove it or fix its spelling. Known keys: {', '.join(sorted(DEFAULTS))}.",
            obj="TIERCACHE",
            id="tiercache.E005",
        )
        for key in configured
        if key not in DEFAULTS
    ]
    config = {**DEFAULTS, **configured}
    return (
        unknown
        + _stats_settings(config)
        + _observer_settings(config["OBSERVERS"])
        + _write_behind_settings()
        + _consistency_settings(config)
    )


def _consistency_settings(config: dict[str, Any]) -> list[CheckMessage]:
    """The consistency sampler's share and grace (tiercache.E014)."""
    found = []
    rate, grace = config["CONSISTENCY_SAMPLE_RATE"], config["CONSISTENCY_GRACE"]
    if not _finite(rate) or not 0 <= rate <= 1:
        found.append(
            f"TIERCACHE['CONSISTENCY_SAMPLE_RATE'] must be a share from 0 to 1, got {rate!r}."
        )
    if not _finite(grace) or grace < 0:
        found.append(f"TIERCACHE['CONSISTENCY_GRACE'] must be seconds >= 0, got {grace!r}.")
    hint = "E.g. CONSISTENCY_SAMPLE_RATE 0.0001 (one hit in 10,000) and CONSISTENCY_GRACE 2.0."
    return [Error(m, hint=hint, obj="TIERCACHE", id="tiercache.E014") for m in found]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _write_behind_settings() -> list[CheckMessage]:
    """TIERCACHE["WRITE_BEHIND"] (tiercache.E010), as write_behind/settings.py reads it."""
    given = getattr(settings, "TIERCACHE", {}).get("WRITE_BEHIND")
    unknown = (
        [k for k in given if k not in write_behind_settings.DEFAULTS]
        if isinstance(given, dict)
        else []
    )
    messages: list[CheckMessage] = []
    for problem in write_behind_settings.problems():
        near = [
            did_you_mean(k, write_behind_settings.DEFAULTS) for k in unknown if repr(k) in problem
        ]
        messages.append(
            Error(
                problem + (near[0] if near else ""),
                hint="Fix the value, or leave the key out to get the default (see the "
                "documentation, Write-through and write-behind).",
                obj="TIERCACHE['WRITE_BEHIND']",
                id="tiercache.E010",
            )
        )
    messages += [
        Warning(
            shared,
            hint="Give the cache a KEY_PREFIX of this project's own, or set "
            "TIERCACHE['WRITE_BEHIND']['KEY_PREFIX'].",
            obj="TIERCACHE['WRITE_BEHIND']",
            id="tiercache.W010",
        )
        for shared in write_behind_settings.shared_journal()
    ]
    return messages


def _stats_settings(config: dict[str, Any]) -> list[CheckMessage]:
    """The statistics settings' values (tiercache.E006), as stats/conf.py reads them."""
    return [
        Error(
            problem,
            hint="Fix the value, or leave the key out to get the default (see the "
            "documentation, Statistics).",
            obj="TIERCACHE",
            id="tiercache.E006",
        )
        for problem in stats_conf.problems(stats_conf.with_targets(config))
    ]


def _observer_settings(paths: Any) -> list[CheckMessage]:
    """TIERCACHE["OBSERVERS"] names importable observer factories (tiercache.E008)."""
    hint = (
        "Give a list of dotted paths to callables (Building) -> Observer | None; "
        "see storage/observers.py."
    )
    if not isinstance(paths, (list, tuple)):
        message = f"TIERCACHE['OBSERVERS'] must be a list, not {type(paths).__name__}."
        return [Error(message, hint=hint, obj="TIERCACHE", id="tiercache.E008")]
    problems = [factory_problem(path) for path in paths]
    return [
        Error(problem, hint=hint, obj="TIERCACHE", id="tiercache.E008")
        for problem in problems
        if problem is not None
    ]


# WRITE_LOCK_TIMEOUT must cover a lock's worst confirmation (a fence that waits
# TAG_LEASE, a connect and a read that time out) with room for the query: a write
# whose locks took longer stops (orm/transactions.py, QUERY_ROOM).


@register(Tags.caches)
def check_write_lock_timeout(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """tiercache.E015: WRITE_LOCK_TIMEOUT not comfortably above every TierCache's
    TAG_LEASE plus its socket timeouts."""
    seconds: Any = {**DEFAULTS, **getattr(settings, "TIERCACHE", {})}.get("WRITE_LOCK_TIMEOUT")
    if not _finite(seconds):
        return []
    found: list[CheckMessage] = []
    for alias, config in getattr(settings, "CACHES", {}).items():
        if config.get("BACKEND") != BACKEND:
            continue
        parsed = parse(config.get("LOCATION", ""), config.get("OPTIONS"))
        if any(p.is_error for p in parsed.problems):
            continue  # check_caches names those
        timeouts = ("TAG_LEASE", "SOCKET_TIMEOUT", "SOCKET_CONNECT_TIMEOUT")
        worst = sum(float(parsed[name]) for name in timeouts)
        needed = worst + QUERY_ROOM
        if seconds < needed:
            found.append(
                Error(
                    f"TIERCACHE['WRITE_LOCK_TIMEOUT'] = {seconds:g} s is not comfortably above "
                    f"what confirming a write lock on CACHES[{alias!r}] may take ({worst:g} s: "
                    f"TAG_LEASE plus the socket timeouts): a write's locks could expire before "
                    f"it commits, and saves stop with InvalidationIncomplete when a fence waits.",
                    hint=f"Set WRITE_LOCK_TIMEOUT to at least {needed:g} s (the "
                    f"default is 30), or lower TAG_LEASE / the socket timeouts of that cache.",
                    obj="TIERCACHE['WRITE_LOCK_TIMEOUT']",
                    id="tiercache.E015",
                )
            )
    return found


@register(Tags.urls)
def check_metrics_view(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """tiercache.E016: the URLconf serves the Prometheus view without prometheus_client."""
    from django.urls import NoReverseMatch, reverse

    from .stats import prometheus

    if prometheus.unavailable is None:
        return []
    try:
        url = reverse("django_tiercache:metrics")
    except NoReverseMatch:
        return []  # not in the URLconf: nothing needs the library
    return [
        Error(
            f"The URLconf includes django_tiercache.urls ({url}), whose Prometheus view needs "
            f"prometheus_client, which cannot be imported ({prometheus.unavailable}); the view "
            f"answers 503 meanwhile.",
            hint="pip install 'django-tiercache[prometheus]', or drop "
            "include('django_tiercache.urls') if nothing scrapes it.",
            obj="django_tiercache.urls",
            id="tiercache.E016",
        )
    ]
