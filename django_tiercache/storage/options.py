"""Reading and validating a TierCache's LOCATION and OPTIONS.

One parser serves both the system checks (which report every problem with an
id and a hint) and the backend (which refuses to start on the first error), so
the two can never disagree about what a valid configuration is.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.utils.module_loading import import_string

from ..conf import did_you_mean

MEMORY_SCHEME = "memory"
REDIS_SCHEMES = ("redis", "rediss", "unix")
# Schemes whose URL names several hosts (host:port,host:port): urlsplit cannot read their port.
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
# Valkey's URL schemes, accepted wherever the Redis ones are (Valkey speaks the
# same protocol): read as the Redis scheme they stand for.
VALKEY_SCHEMES = {
    "valkey": "redis",
    "valkeys": "rediss",
    "valkey+sentinel": SENTINEL_SCHEME,
    "valkey+cluster": CLUSTER_SCHEME,
}


def redis_scheme_url(url: Any) -> Any:
    """`url` with a valkey scheme (valkey://, valkeys://, valkey+sentinel://,
    valkey+cluster://) replaced by the Redis one; anything else as it is."""
    if not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    redis_scheme = VALKEY_SCHEMES.get(scheme.lower())
    return f"{redis_scheme}{sep}{rest}" if sep and redis_scheme else url


SERIALIZER_ALIASES = {
    "pickle": "django_redis.serializers.pickle.PickleSerializer",
    "json": "django_redis.serializers.json.JSONSerializer",
    "msgpack": "django_redis.serializers.msgpack.MSGPackSerializer",
}
PICKLE_SERIALIZER = SERIALIZER_ALIASES["pickle"]

# Options handed untouched to django-redis' connection factory.
CONNECTION_OPTIONS = (
    "PASSWORD",
    "USERNAME",
    "CONNECTION_POOL_CLASS",
    "CONNECTION_POOL_KWARGS",
    "REDIS_CLIENT_CLASS",
    "REDIS_CLIENT_KWARGS",
    "PARSER_CLASS",
    "PICKLE_VERSION",
)

DEFAULTS: dict[str, Any] = {
    "SERIALIZER": PICKLE_SERIALIZER,
    "COMPRESSOR": "django_redis.compressors.identity.IdentityCompressor",
    "SIGNED": True,
    "RAISE_ERRORS": False,
    "SOCKET_TIMEOUT": 1.0,
    "SOCKET_CONNECT_TIMEOUT": 0.5,
    "BREAKER_FAILURES": 3,
    "BREAKER_COOLDOWN": 5.0,
    "TAG_LEASE": 3.0,
    # What an invalidation that cannot be made safe does: "raise"
    # InvalidationIncomplete (a model write then fails before its query), or
    # "log" it and go on, accepting that a partition may serve stale entries.
    "INVALIDATION_FAILURE": "raise",
    # Where missed invalidations are also kept, durably: None, "database" (the
    # table of orm/witness.py, in WITNESS_DATABASE) or a dotted path.
    "WITNESS": None,
    "WITNESS_DATABASE": "default",
    "PARTITION_NAMES": None,
    "MEMORY_MAX_ENTRIES": 10_000,
    # False, True or a dict of HOT_KEYS_DEFAULTS' keys: sample reads and keep the
    # hottest keys in Redis, for `warm_cache --hot` (see hotkeys/record.py).
    "HOT_KEYS": False,
    # False (off), True, or a dict of L1_DEFAULTS' keys: an in-process tier in
    # front of the Redis partitions, kept coherent across processes (storage/l1.py).
    "L1": False,
    # True (the defaults), False (off) or a dict of SINGLE_FLIGHT_DEFAULTS' keys:
    # one loader per missed key across threads and processes (storage/single_flight.py).
    "SINGLE_FLIGHT": True,
    # A redis+cluster:// LOCATION is spread over this many slot groups, each a
    # partition of its own in one hash slot (storage/stores/cluster.py).
    "CLUSTER_SLOT_GROUPS": 8,
    # close() also closes the pools' idle connections: None follows django-redis'
    # DJANGO_REDIS_CLOSE_CONNECTION setting (off unless set).
    "CLOSE_CONNECTION": None,
    # Replicas of the partitions, for raw reads only: cache.client.get_client(write=False)
    # (django-redis' primary/replica reads). A list (one partition) or {partition: [URL]}.
    "READ_REPLICAS": None,
}

SINGLE_FLIGHT_DEFAULTS: dict[str, Any] = {
    # Seconds a loader's claim lives if the loader dies; renewed every third of it
    # while the loader runs, so a long load keeps its claim and a dead one frees it.
    "CLAIM_TTL": 1.0,
    "WAIT": 5.0,  # seconds a caller waits for another's load before loading itself
}

L1_DEFAULTS: dict[str, Any] = {
    "MAX_ENTRIES": 10_000,  # copies kept per process
    "MAX_BYTES": 64 * 2**20,  # their serialized size, roughly
    "TIMEOUT": 5.0,  # seconds a copy lives at most, whatever its Redis timeout
    # Seconds a partition's subscriber may be proven behind it before its copies
    # stop being served (storage/l1.py); None: no bound.
    "MAX_LAG": 1.0,
}

HOT_KEYS_DEFAULTS: dict[str, Any] = {
    "SAMPLE": 0.01,  # fraction of reads recorded
    "SIZE": 1000,  # keys kept, hottest first
    "HALF_LIFE": 3600.0,  # seconds for a key's score to halve without reads
    "FLUSH": 5.0,  # seconds between sending a process's samples to Redis
    "LOCATION": None,  # a Redis URL for the record; None: every Redis partition
}

# One line of help per OPTIONS key (the reference in docs/ is generated from these).
OPTION_HELP: dict[str, str] = {
    "SERIALIZER": (
        '`"pickle"`, `"json"`, `"msgpack"` or the dotted path of a django-redis serializer class'
    ),
    "COMPRESSOR": (
        "dotted path of a django-redis compressor, e.g. "
        "`django_redis.compressors.zlib.ZlibCompressor`"
    ),
    "SIGNED": (
        "sign every serialized entry (keyed BLAKE2b, key derived from `SECRET_KEY`); unsigned"
        " or tampered entries read as misses"
    ),
    "RAISE_ERRORS": "raise Redis errors instead of turning reads into misses and skipping writes",
    "SOCKET_TIMEOUT": "seconds to wait for a reply",
    "SOCKET_CONNECT_TIMEOUT": "seconds to wait for a connection",
    "BREAKER_FAILURES": (
        "consecutive refused or dropped connections that open a partition's circuit breaker; "
        'a single timeout opens it at once (see "When Redis fails")'
    ),
    "BREAKER_COOLDOWN": (
        "seconds an open breaker skips the partition before letting one probe call through"
    ),
    "TAG_LEASE": (
        "seconds a partition's tagged entries are trusted between checks with the other "
        'partitions (see "The guarantee")'
    ),
    "INVALIDATION_FAILURE": (
        "an invalidation (or a model write's lock) that cannot be made safe raises "
        '`InvalidationIncomplete`, so a model write fails before its query; `"log"` logs it '
        "and goes on, accepting that a partition may serve stale entries"
    ),
    "WITNESS": (
        '`"database"`: keep every missed invalidation in a database table too, so that a lone'
        ' partition or the survivor of two keeps serving through an outage (see "The '
        'guarantee")'
    ),
    "WITNESS_DATABASE": "the `DATABASES` alias of that table (created by `migrate`)",
    "PARTITION_NAMES": (
        "one stable name per `LOCATION` entry; routing follows names, so renaming moves keys "
        "and reordering does not"
    ),
    "MEMORY_MAX_ENTRIES": (
        "per `memory://` partition; least recently used entries are culled past it"
    ),
    "CLOSE_CONNECTION": (
        "`True`: `close()` (Django calls it after every request) also closes the shared "
        "pools' idle connections; `None` follows django-redis' "
        "`DJANGO_REDIS_CLOSE_CONNECTION`"
    ),
    "READ_REPLICAS": (
        "replica URLs of the partitions, as django-redis' `LOCATION` `[primary, replica, ...]`:"
        " a list for a one-partition cache or `{partition name or URL: [URL, ...]}`; only "
        "`cache.client.get_client(write=False)` reads there (the cache itself reads primaries:"
        ' a lagging replica could serve an invalidated entry; see "Coming from django-redis")'
    ),
    "CLUSTER_SLOT_GROUPS": (
        "with a `redis+cluster://` `LOCATION`: the number of slot groups keys are spread over"
        ' (see "Scaling out")'
    ),
    "HOT_KEYS": (
        'sample reads and keep the hottest keys in Redis for `warm_cache --hot` (see "Hot keys")'
    ),
    "L1": (
        '`True` or `{"MAX_ENTRIES": 10000, "MAX_BYTES": 64 * 2**20, "TIMEOUT": 5, "MAX_LAG": '
        '1.0}`: an in-process tier in front of Redis (see "L1")'
    ),
    "SINGLE_FLIGHT": (
        '`{"CLAIM_TTL": 1, "WAIT": 5}` (seconds): one loader per missed key across threads '
        "and processes for `get_or_set`, `get_or_set_many`, `get_object(s)` and `cached`; the"
        " loader renews its claim every third of `CLAIM_TTL` while it loads (a heartbeat), so"
        " a claim lives `CLAIM_TTL` after its loader dies and one waiter takes over; a waiter"
        " loads itself after `WAIT`; `False` turns it off"
    ),
    "PASSWORD": (
        "the password of every partition's server (else the URL's); handed to django-redis' "
        "connection factory"
    ),
    "USERNAME": "the ACL user of every partition's server (else the URL's)",
    "CONNECTION_POOL_KWARGS": (
        "keyword arguments of the connection pools (e.g. `max_connections`, 100 by default; "
        "also the async pools' limit); `encoding` must stay UTF-8 (tiercache.E003)"
    ),
    "CONNECTION_POOL_CLASS": "dotted path of the redis-py connection pool class",
    "REDIS_CLIENT_CLASS": "dotted path of the redis-py client class",
    "REDIS_CLIENT_KWARGS": "keyword arguments of the redis-py client",
    "PARSER_CLASS": "dotted path of the redis-py reply parser class",
    "PICKLE_VERSION": "the pickle protocol of the pickle serializer (-1: the highest)",
}

# OPTIONS['L1'] as a dict.
L1_HELP: dict[str, str] = {
    "MAX_ENTRIES": "copies kept per process",
    "MAX_BYTES": "their serialized size, roughly, at most",
    "TIMEOUT": "seconds a copy lives at most, whatever its Redis timeout",
    "MAX_LAG": (
        "seconds a partition's subscriber may be proven behind before its copies stop being "
        "served; None: no bound"
    ),
}

# OPTIONS['SINGLE_FLIGHT'] as a dict.
SINGLE_FLIGHT_HELP: dict[str, str] = {
    "CLAIM_TTL": (
        "seconds a loader's claim lives after its loader dies (renewed every third of it "
        "while the loader runs)"
    ),
    "WAIT": "seconds a caller waits for another's load before loading itself",
}

# OPTIONS['HOT_KEYS'] as a dict.
HOT_KEYS_HELP: dict[str, str] = {
    "SAMPLE": "fraction of reads recorded; scores estimate reads (counts / SAMPLE)",
    "SIZE": "keys kept, hottest first",
    "HALF_LIFE": "seconds for a key's score to halve without reads",
    "FLUSH": (
        "seconds between sends of a process's samples (from a short-lived thread, never by a read)"
    ),
    "LOCATION": "a Redis URL for the record; by default a copy lives on every Redis partition",
}

POSITIVE_NUMBERS = ("SOCKET_TIMEOUT", "SOCKET_CONNECT_TIMEOUT", "BREAKER_COOLDOWN", "TAG_LEASE")
POSITIVE_INTEGERS = ("BREAKER_FAILURES", "MEMORY_MAX_ENTRIES", "CLUSTER_SLOT_GROUPS")
BOOLEANS = ("SIGNED", "RAISE_ERRORS")
WITNESS_ALIASES = {"database": "django_tiercache.orm.witness.DatabaseWitness"}
INVALIDATION_FAILURES = ("raise", "log")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cache's configuration."""

    id: str  # "E001" ... or "W001" ...
    msg: str
    hint: str

    @property
    def is_error(self) -> bool:
        return self.id.startswith("E")


@dataclass
class CacheOptions:
    """The validated configuration of one TierCache."""

    urls: list[str]
    names: list[str]
    options: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.options[name]

    @property
    def connection_options(self) -> dict[str, Any]:
        """What django-redis' ConnectionFactory needs to build the pools."""
        chosen = {k: v for k, v in self.options.items() if k in CONNECTION_OPTIONS}
        chosen["SOCKET_TIMEOUT"] = self.options["SOCKET_TIMEOUT"]
        chosen["SOCKET_CONNECT_TIMEOUT"] = self.options["SOCKET_CONNECT_TIMEOUT"]
        return chosen


def parse(location: Any, options: dict[str, Any] | None) -> CacheOptions:
    """Parse LOCATION and OPTIONS, collecting every problem instead of stopping."""
    problems: list[Problem] = []
    urls = _parse_location(location, problems)
    merged = dict(DEFAULTS)
    raw = options or {}
    if not isinstance(raw, dict):
        problems.append(
            Problem(
                "E003",
                f"OPTIONS must be a dict, not {type(raw).__name__}.",
                "Write OPTIONS as a dict, e.g. {'SIGNED': True}.",
            )
        )
        raw = {}
    for key, value in raw.items():
        if key not in DEFAULTS and key not in CONNECTION_OPTIONS:
            problems.append(_unknown_option(key))
        else:
            merged[key] = value
    merged["SERIALIZER"] = SERIALIZER_ALIASES.get(merged["SERIALIZER"], merged["SERIALIZER"])
    if isinstance(merged["WITNESS"], str):
        merged["WITNESS"] = WITNESS_ALIASES.get(merged["WITNESS"], merged["WITNESS"])
    _check_values(merged, problems)
    if any(_scheme(url) == CLUSTER_SCHEME for url in urls):
        return _cluster_options(urls, merged, problems)
    names = _partition_names(urls, merged["PARTITION_NAMES"], problems)
    _check_two_partitions(urls, merged, problems)
    merged["READ_REPLICAS"] = _read_replicas(urls, names, merged["READ_REPLICAS"], problems)
    return CacheOptions(urls=urls, names=names, options=merged, problems=problems)


def _check_two_partitions(urls: list[str], merged: dict[str, Any], problems: list[Problem]) -> None:
    """Two servers and no witness: a fence is kept on one partition alone (storage/tags.py)."""
    servers = [url for url in urls if _scheme(url) != "memory"]
    if len(servers) == 2 and merged["WITNESS"] is None:
        problems.append(
            Problem(
                "W012",
                "Two Redis partitions and no witness: after either server restarts without "
                "its data, both refuse tagged writes for TIERCACHE['WRITE_LOCK_TIMEOUT'] "
                "(the fences and write locks it kept are known nowhere else).",
                "Set OPTIONS['WITNESS'] = 'database' (then migrate), or use three partitions; "
                "with either, tagged writes go on at once after a restart.",
            )
        )


# django-redis options a migrating project may still have, and what to do instead.
DJANGO_REDIS_OPTIONS = {
    "CLIENT_CLASS": "Remove it: partitioning is built in (LOCATION lists the partitions).",
    "IGNORE_EXCEPTIONS": "Remove it: errors become misses by default; "
    "RAISE_ERRORS=True makes them raise.",
    "REPLICA_READ_ONLY": "Remove it: every LOCATION entry is a primary of its own partition; "
    "list replicas in OPTIONS['READ_REPLICAS'] (raw get_client(write=False) reads only).",
    "SHARD_CLIENT_KEY_FUNC": "Remove it: keys are spread by rendezvous hashing of their names.",
}


def _unknown_option(key: str) -> Problem:
    names = sorted([*DEFAULTS, *CONNECTION_OPTIONS])
    if DJANGO_REDIS_OPTIONS.get(key):
        return Problem(
            "E002",
            f"OPTIONS key {key!r} is django-redis', which TierCache does not take.",
            DJANGO_REDIS_OPTIONS[key],
        )
    return Problem(
        "E002",
        f"Unknown OPTIONS key {key!r}.{did_you_mean(key, names)}",
        f"Remove it or fix its spelling. Known keys: {', '.join(names)}.",
    )


def _parse_location(location: Any, problems: list[Problem]) -> list[str]:
    if isinstance(location, str):
        urls = _split_location(location)
    elif isinstance(location, (list, tuple)):
        urls = [redis_scheme_url(url) for url in location]
    else:
        urls = []
    if not urls:
        problems.append(
            Problem(
                "E001",
                f"LOCATION must name at least one partition, got {location!r}.",
                "Use 'memory://' for an in-process cache or a list of Redis URLs such as "
                "['redis://127.0.0.1:6379/0'].",
            )
        )
    for url in urls:
        problem = _url_problem(url)
        if problem:
            problems.append(problem)
    if len(set(map(str, urls))) != len(urls):
        problems.append(
            Problem(
                "E001",
                f"LOCATION lists a partition twice: {urls!r}.",
                "List each Redis server (and database) once.",
            )
        )
    return [str(url) for url in urls]


def _split_location(location: str) -> list[str]:
    """A comma-separated LOCATION, keeping the host lists of sentinel and cluster URLs whole."""
    urls: list[str] = []
    for part in filter(None, (redis_scheme_url(p.strip()) for p in location.split(","))):
        multi_host = urls and _scheme(urls[-1]) in (SENTINEL_SCHEME, CLUSTER_SCHEME)
        if multi_host and "://" not in part and "/" not in urls[-1].partition("://")[2]:
            urls[-1] += "," + part
        else:
            urls.append(part)
    return urls


def _url_problem(url: Any) -> Problem | None:
    hint = (
        "Each LOCATION entry is a URL: redis://host:port/db, rediss://..., "
        "unix:///path/to/socket, memory://name, "
        "redis+sentinel://host:port[,host:port...]/service/db or "
        "redis+cluster://host:port[,host:port...]/."
    )
    if not isinstance(url, str):
        return Problem("E001", f"LOCATION entry {url!r} is not a string.", hint)
    if _scheme(url) in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        try:
            parse_sentinel_url(url) if _scheme(url) == SENTINEL_SCHEME else parse_cluster_url(url)
        except ValueError as exc:
            return Problem("E001", f"LOCATION entry {url!r} is not valid: {exc}.", hint)
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return Problem("E001", f"LOCATION entry {url!r} is not a valid URL ({exc}).", hint)
    if parts.scheme not in (MEMORY_SCHEME, *REDIS_SCHEMES):
        return Problem(
            "E001", f"LOCATION entry {url!r} has an unsupported scheme {parts.scheme!r}.", hint
        )
    if parts.scheme in ("redis", "rediss") and not parts.hostname:
        return Problem("E001", f"LOCATION entry {url!r} names no host.", hint)
    return None


def _check_encoding(merged: dict[str, Any], problems: list[Problem]) -> None:
    """Keys and tags go to Redis as UTF-8: a tag's slot is the hash of its UTF-8 bytes
    on both sides (stores/slots.py and the Functions). A connection that encodes text
    otherwise would send a non-ASCII tag as other bytes, which the Functions hash into
    another slot than the one this process drops its L1 copies of: refused."""
    pool = merged.get("CONNECTION_POOL_KWARGS") or {}
    value = pool.get("encoding", "utf-8") if isinstance(pool, dict) else "utf-8"
    if not isinstance(value, str) or _codec(value) != "utf-8":
        problems.append(
            Problem(
                "E003",
                f"OPTIONS['CONNECTION_POOL_KWARGS']['encoding'] is {value!r}: TierCache sends "
                "keys and tags as UTF-8 (a tag's slot is the hash of those bytes).",
                "Leave 'encoding' out (UTF-8, redis-py's default).",
            )
        )


def _codec(name: str) -> str:
    """A codec's canonical name ("UTF8" and "utf_8" are "utf-8"); an unknown one as given."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        return name


def _check_values(merged: dict[str, Any], problems: list[Problem]) -> None:
    _check_encoding(merged, problems)
    for key in POSITIVE_NUMBERS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            problems.append(
                Problem(
                    "E003",
                    f"OPTIONS[{key!r}] must be a positive number of seconds, got {value!r}.",
                    f"Set it to e.g. {DEFAULTS[key]!r} or leave it out.",
                )
            )
    for key in POSITIVE_INTEGERS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(
                Problem(
                    "E003",
                    f"OPTIONS[{key!r}] must be a positive integer, got {value!r}.",
                    f"Set it to e.g. {DEFAULTS[key]!r} or leave it out.",
                )
            )
    for key in BOOLEANS:
        if not isinstance(merged[key], bool):
            problems.append(
                Problem(
                    "E003",
                    f"OPTIONS[{key!r}] must be True or False, got {merged[key]!r}.",
                    f"Set it to {DEFAULTS[key]!r} or leave it out.",
                )
            )
    for key in ("SERIALIZER", "COMPRESSOR"):
        _check_import(key, merged[key], problems)
    _check_hot_keys(merged["HOT_KEYS"], problems)
    _check_witness(merged, problems)
    _check_l1(merged["L1"], problems)
    _check_single_flight(merged["SINGLE_FLIGHT"], problems)
    if merged["INVALIDATION_FAILURE"] not in INVALIDATION_FAILURES:
        problems.append(
            Problem(
                "E003",
                f"OPTIONS['INVALIDATION_FAILURE'] must be 'raise' or 'log', got "
                f"{merged['INVALIDATION_FAILURE']!r}.",
                "Leave it out ('raise', the safe default) or set 'log' to keep writing "
                "when an invalidation cannot be made safe.",
            )
        )
    if merged["SERIALIZER"] == PICKLE_SERIALIZER and merged["SIGNED"] is False:
        problems.append(
            Problem(
                "W001",
                "The pickle serializer is used with SIGNED off: anyone who can write to "
                "Redis can make this application unpickle, i.e. run, their bytes.",
                "Keep OPTIONS['SIGNED'] = True, or choose SERIALIZER 'json' or 'msgpack'.",
            )
        )


def _check_witness(merged: dict[str, Any], problems: list[Problem]) -> None:
    if merged["WITNESS"] is not None:
        _check_import("WITNESS", merged["WITNESS"], problems)
    database = merged["WITNESS_DATABASE"]
    if merged["WITNESS"] is not None and database not in getattr(settings, "DATABASES", {}):
        problems.append(
            Problem(
                "E003",
                f"OPTIONS['WITNESS_DATABASE'] = {database!r} is not in DATABASES.",
                "Name a database alias from DATABASES (the witness table is created "
                "there by `manage.py migrate`), or leave it out for 'default'.",
            )
        )


def _check_hot_keys(value: Any, problems: list[Problem]) -> None:
    hint = (
        "Set OPTIONS['HOT_KEYS'] to False, True, or a dict such as "
        "{'SAMPLE': 0.01, 'SIZE': 1000, 'HALF_LIFE': 3600, 'FLUSH': 5, 'LOCATION': None}."
    )
    if isinstance(value, bool):
        return
    if not isinstance(value, dict):
        problems.append(Problem("E003", f"OPTIONS['HOT_KEYS'] = {value!r} is not valid.", hint))
        return
    for key in value:
        if key not in HOT_KEYS_DEFAULTS:
            msg = f"Unknown OPTIONS['HOT_KEYS'] key {key!r}.{did_you_mean(key, HOT_KEYS_DEFAULTS)}"
        elif not _hot_value_ok(key, value[key]):
            msg = f"OPTIONS['HOT_KEYS'][{key!r}] = {value[key]!r} is not valid."
        else:
            continue
        problems.append(Problem("E003", msg, hint))


def _check_l1(value: Any, problems: list[Problem]) -> None:
    hint = (
        "Set OPTIONS['L1'] to False (off), True (the defaults), or a dict such as "
        "{'MAX_ENTRIES': 10000, 'MAX_BYTES': 64 * 2**20, 'TIMEOUT': 5, 'MAX_LAG': 1.0}."
    )
    if isinstance(value, bool):
        return
    if not isinstance(value, dict):
        problems.append(Problem("E003", f"OPTIONS['L1'] = {value!r} is not valid.", hint))
        return
    for key, item in value.items():
        whole = key not in ("TIMEOUT", "MAX_LAG")
        ok = (key == "MAX_LAG" and item is None) or (
            key in L1_DEFAULTS
            and not isinstance(item, bool)
            and isinstance(item, int if whole else (int, float))
            and item > 0
        )
        if not ok:
            what = "a positive integer" if whole else "a positive number of seconds"
            if key == "MAX_LAG":
                what += " or None (no bound)"
            if key not in L1_DEFAULTS:
                what = f"one of {', '.join(L1_DEFAULTS)}"
            problems.append(
                Problem(
                    "E003",
                    f"OPTIONS['L1'][{key!r}] = {item!r} is not valid: {what}."
                    f"{did_you_mean(key, L1_DEFAULTS)}",
                    hint,
                )
            )


def _check_single_flight(value: Any, problems: list[Problem]) -> None:
    hint = (
        "Set OPTIONS['SINGLE_FLIGHT'] to True (the defaults), False (off), or a dict such "
        "as {'CLAIM_TTL': 1, 'WAIT': 5} (seconds)."
    )
    if isinstance(value, bool):
        return
    if not isinstance(value, dict):
        problems.append(
            Problem("E003", f"OPTIONS['SINGLE_FLIGHT'] = {value!r} is not valid.", hint)
        )
        return
    for key, item in value.items():
        if key not in SINGLE_FLIGHT_DEFAULTS:
            what = f"one of {', '.join(SINGLE_FLIGHT_DEFAULTS)}"
        elif (
            isinstance(item, bool)
            or not isinstance(item, (int, float))
            or not math.isfinite(item)
            or item <= 0
        ):
            what = "a positive number of seconds"
        else:
            continue
        problems.append(
            Problem(
                "E003",
                f"OPTIONS['SINGLE_FLIGHT'][{key!r}] = {item!r} is not valid: {what}."
                f"{did_you_mean(key, SINGLE_FLIGHT_DEFAULTS)}",
                hint,
            )
        )
    # WAIT may be longer than CLAIM_TTL: a live loader renews its claim (the
    # heartbeat, single_flight.py), so only a dead one's claim runs out.


def single_flight_settings(value: Any) -> dict[str, Any] | None:
    """The single-flight timings of a validated OPTIONS["SINGLE_FLIGHT"], or None when off."""
    if not value:
        return None
    return {**SINGLE_FLIGHT_DEFAULTS, **(value if isinstance(value, dict) else {})}


def l1_settings(value: Any) -> dict[str, Any] | None:
    """The L1 settings of a validated OPTIONS["L1"], or None when it is off."""
    if not value:
        return None
    return {**L1_DEFAULTS, **(value if isinstance(value, dict) else {})}


def _hot_value_ok(key: str, value: Any) -> bool:
    if key == "LOCATION":
        return value is None or (
            isinstance(value, str)
            and _url_problem(redis_scheme_url(value)) is None
            and urlsplit(redis_scheme_url(value)).scheme in REDIS_SCHEMES
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return False
    if key == "SIZE":
        return isinstance(value, int)
    return key != "SAMPLE" or value <= 1


def _check_import(key: str, path: Any, problems: list[Problem]) -> None:
    try:
        import_string(path)
    except (ImportError, TypeError, ValueError, AttributeError) as exc:
        extra = " (install django-tiercache[msgpack])" if "msgpack" in str(path) else ""
        problems.append(
            Problem(
                "E003",
                f"OPTIONS[{key!r}] = {path!r} cannot be imported: {exc}.",
                f"Give a dotted path to a django-redis compatible class{extra}.",
            )
        )


def _partition_names(urls: list[str], given: Any, problems: list[Problem]) -> list[str]:
    if given is None:
        return [redact(url) for url in urls]
    if (
        not isinstance(given, (list, tuple))
        or len(given) != len(urls)
        or not all(isinstance(n, str) and n for n in given)
        or len(set(given)) != len(given)
    ):
        problems.append(
            Problem(
                "E004",
                f"PARTITION_NAMES must be a list of distinct non-empty strings, one per "
                f"LOCATION entry ({len(urls)}), got {given!r}.",
                "Give one name per LOCATION entry, in the same order, or leave it out to name "
                "partitions by their URL.",
            )
        )
        return [redact(url) for url in urls]
    return list(given)


READ_REPLICAS_HINT = (
    "Set OPTIONS['READ_REPLICAS'] to a list of replica URLs (redis://, rediss://, unix://) "
    "when LOCATION names one partition, or to {partition name or LOCATION URL: [replica URL, "
    "...]}; only a plain Redis partition can have them (a Sentinel finds its own)."
)


def _read_replicas(
    urls: list[str], names: list[str], given: Any, problems: list[Problem]
) -> dict[str, list[str]]:
    """OPTIONS['READ_REPLICAS'] as {partition name: [replica URL]}, problems reported."""
    if given is None:
        return {}
    if isinstance(given, (list, tuple)) and len(urls) == 1:
        given = {names[0]: given}
    if not isinstance(given, dict):
        what = "a list needs a one-partition LOCATION" if isinstance(given, (list, tuple)) else ""
        problems.append(
            Problem(
                "E003",
                f"OPTIONS['READ_REPLICAS'] = {given!r} is not valid{': ' + what if what else ''}.",
                READ_REPLICAS_HINT,
            )
        )
        return {}
    by_name = {**dict(zip(urls, names, strict=True)), **{n: n for n in names}}
    url_of = dict(zip(names, urls, strict=True))
    replicas: dict[str, list[str]] = {}
    for partition, listed in given.items():
        name = by_name.get(partition)
        problem = _replicas_problem(partition, name, listed, url_of.get(name or "", ""))
        if problem:
            problems.append(Problem("E003", problem, READ_REPLICAS_HINT))
        else:
            replicas[name] = [redis_scheme_url(url) for url in listed]  # type: ignore[index]
    return replicas


def _replicas_problem(partition: Any, name: str | None, listed: Any, url: str) -> str | None:
    where = f"OPTIONS['READ_REPLICAS'][{partition!r}]"
    if name is None:
        return f"{where}: {partition!r} is not a partition of LOCATION."
    if urlsplit(url).scheme not in REDIS_SCHEMES:
        return f"{where}: partition {partition!r} is not a plain Redis server."
    if not isinstance(listed, (list, tuple)) or not listed:
        return f"{where} = {listed!r} is not a non-empty list of URLs."
    for replica in listed:
        normal = redis_scheme_url(replica)
        if (
            not isinstance(normal, str)
            or _url_problem(normal) is not None
            or urlsplit(normal).scheme not in REDIS_SCHEMES
        ):
            return f"{where}: {replica!r} is not a redis://, rediss:// or unix:// URL."
        if normal == url:
            return f"{where}: {replica!r} is the partition itself."
    return None


def redact(url: str) -> str:
    """The URL without its password, fit to show on a page or in a log.

    Every form redis-py reads a password from is covered: ``user:pass@``,
    ``:pass@`` and a ``password=`` query parameter.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        netloc = user + netloc.rsplit("@", 1)[1]
    query = "&".join(_redact_parameter(p) for p in parts.query.split("&")) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return parts._replace(netloc=netloc, query=query).geturl()


def _redact_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}=***" if equals and name.lower() == "password" else parameter


def _scheme(url: Any) -> str:
    return url.partition("://")[0].lower() if isinstance(url, str) else ""


@dataclass(frozen=True)
class SentinelLocation:
    """What a redis+sentinel:// URL names."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class ClusterLocation:
    """What a redis+cluster:// URL names; group is the slot group of one partition."""

    nodes: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None
    group: int = 0


def _hosts(url: str, default_port: int) -> tuple[list[tuple[str, int]], str, Any]:
    """(host, port) pairs, path and credentials of a multi-host URL; ValueError if bad."""
    rest = url.partition("://")[2]
    netloc, _, path = rest.partition("/")
    credentials, _, hosts = netloc.rpartition("@")
    pairs = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        host, colon, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host or (colon and not port.isdigit()) or not 0 < int(port or default_port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        pairs.append((host, int(port or default_port)))
    if not pairs:
        raise ValueError("it names no host")
    user, _, password = credentials.partition(":")
    return pairs, path, (unquote(user) or None, unquote(password) or None)


def parse_sentinel_url(url: str) -> SentinelLocation:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``

    The credentials are the primary's; the sentinels are reached without.
    """
    sentinels, path, (user, password) = _hosts(url.partition("#")[0], 26379)
    service, _, db = path.partition("/")
    if not service:
        raise ValueError("it names no service (the name the sentinels monitor)")
    if db.strip("/") and not db.strip("/").isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return SentinelLocation(sentinels, service, int(db.strip("/") or 0), user, password)


def parse_cluster_url(url: str) -> ClusterLocation:
    """``redis+cluster://[user:password@]host:port[,host:port...]/[#group]``

    The hosts are where to start: redis-py's RedisCluster finds the others.
    """
    base, _, fragment = url.partition("#")
    nodes, path, (user, password) = _hosts(base, 6379)
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only")
    group = fragment.partition("/")[0]
    if group and not group.isdigit():
        raise ValueError(f"slot group {group!r} is not a number")
    return ClusterLocation(nodes, user, password, int(group or 0))


def _cluster_options(urls: list[str], merged: dict[str, Any], problems: list[Problem]) -> Any:
    """A cluster LOCATION becomes CLUSTER_SLOT_GROUPS partitions, one per slot group."""
    if len(urls) > 1:
        problems.append(
            Problem(
                "E001",
                f"LOCATION mixes a Redis Cluster with other partitions: {urls!r}.",
                "A redis+cluster:// URL makes the whole cluster the cache's storage: give it "
                "alone (list several seed nodes inside it: redis+cluster://h1:7000,h2:7000/), "
                "or use plain redis:// partitions without it.",
            )
        )
    if merged["PARTITION_NAMES"] is not None:
        problems.append(
            Problem(
                "E004",
                "PARTITION_NAMES cannot be given for a redis+cluster:// LOCATION.",
                "Leave it out: the partitions are the cluster's slot groups, named after it.",
            )
        )
    if merged["READ_REPLICAS"] is not None:
        problems.append(
            Problem(
                "E003",
                "OPTIONS['READ_REPLICAS'] cannot be given for a redis+cluster:// LOCATION.",
                "Leave OPTIONS['READ_REPLICAS'] out: a cluster's replicas are its own (redis-py's "
                "RedisCluster finds them).",
            )
        )
    merged["READ_REPLICAS"] = {}
    groups = merged["CLUSTER_SLOT_GROUPS"]
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        groups = 1  # reported by _check_values
    base = urls[0].partition("#")[0]
    expanded = [f"{base}#{i}/{groups}" for i in range(groups)]
    names = [redact(url) for url in expanded]
    return CacheOptions(urls=expanded, names=names, options=merged, problems=problems)
