"""Benchmark TierCache against django-redis, Django's RedisCache and locmem.

Run from the repository root:

    python benchmarks/bench_backend.py [--rounds N] [--quick] [--json PATH]

Every timed operation is sampled ``rounds`` times; one sample is many calls
timed together with perf_counter_ns and divided by the call count. Samples of
the get operations are interleaved round by round, so that a burst of noise on
the shared Redis falls on every backend alike instead of on one of them.

The shared Redis at 127.0.0.1:6379 is used on db 12 only; that db is flushed
before and after the run. The 4-partition runs add three redis-server
processes on free ports, stopped when the script ends.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import pickle
import platform
import sys
import time
from collections.abc import Callable
from copy import copy
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from _report import (  # noqa: E402
    Row,
    Settings,
    display_position,
    print_header,
    print_ratios,
    print_table,
    ratios,
    write_json,
)
from _servers import redis_servers  # noqa: E402

SHARED_URL = "redis://127.0.0.1:6379/12"
DB = 12
EXTRA_SERVERS = 3
MANY_KEYS = 100
FILL_BATCH = 1000
TIMEOUT = 600  # long enough to outlive the slowest fill
TAGS = ["t1", "t2"]

from _sample import VALUE  # noqa: E402

# ---------------------------------------------------------------- timing


def time_calls(fn: Callable[[], Any], calls: int) -> float:
    """Mean ns per call over ``calls`` back-to-back calls, GC paused."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - start) / calls
    finally:
        if gc_was_enabled:
            gc.enable()


def calibrate(fn: Callable[[], Any], sample_ms: float) -> int:
    """How many calls make one sample last about ``sample_ms``."""
    time_calls(fn, 20)  # warm connections, caches and branch predictors
    per_call = max(time_calls(fn, 50), 1.0)
    return max(1, min(200_000, int(sample_ms * 1e6 / per_call)))


def sample_interleaved(
    rows_fns: list[tuple[Row, Callable[[], Any]]], rounds: int, sample_ms: float
):
    for row, fn in rows_fns:
        row.calls_per_sample = calibrate(fn, sample_ms)
    for r in range(rounds):
        shift = r % len(rows_fns)
        for row, fn in rows_fns[shift:] + rows_fns[:shift]:
            row.samples_ns.append(time_calls(fn, row.calls_per_sample))


# ---------------------------------------------------------------- setup


def cache_settings(extra_ports: list[int]) -> dict[str, dict[str, Any]]:
    tier4 = [SHARED_URL] + [f"redis://127.0.0.1:{port}/{DB}" for port in extra_ports]
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "locmem": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "bench",
            "TIMEOUT": TIMEOUT,
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        },
        "django": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": SHARED_URL,
            "KEY_PREFIX": "bench-dj",
            "TIMEOUT": TIMEOUT,
        },
        "djredis": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": SHARED_URL,
            "KEY_PREFIX": "bench-djr",
            "TIMEOUT": TIMEOUT,
            # Left at its defaults: TierCache uses the same django-redis PickleSerializer.
            "OPTIONS": {},
        },
        "tier1": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": SHARED_URL,
            "KEY_PREFIX": "bench-tc1",
            "TIMEOUT": TIMEOUT,
            "OPTIONS": {},
        },
        "tier4": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": tier4,
            "KEY_PREFIX": "bench-tc4",
            "TIMEOUT": TIMEOUT,
            "OPTIONS": {},
        },
    }


def configure_django(extra_ports: list[int]) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",  # noqa: S106
        CACHES=cache_settings(extra_ports),
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()


def tiercache_problem() -> str:
    """Empty when TierCache can be imported, else why not."""
    try:
        from django_tiercache.backend import TierCache  # noqa: F401
    except Exception as exc:  # any import-time failure means: skip its rows
        return f"{type(exc).__name__}: {exc}"
    return ""


def flush_db12(ports: list[int]) -> None:
    """FLUSHDB db 12 on the shared server and on ours; never FLUSHALL."""
    for port in [6379, *ports]:
        client = redis.Redis(host="127.0.0.1", port=port, db=DB)
        try:
            client.flushdb()
        finally:
            client.close()


# ---------------------------------------------------------------- the machine


def redis_version(port: int) -> str:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return client.info("server")["redis_version"]
    finally:
        client.close()


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed (source tree)" if name == "django-tiercache" else "missing"


def machine_info(ports: list[int]) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis_server_shared": redis_version(6379),
        "redis_server_extra": sorted({redis_version(p) for p in ports}),
        "libraries": {
            name: package_version(name)
            for name in ("Django", "django-redis", "redis", "hiredis", "django-tiercache")
        },
        "value_pickled_bytes": len(pickle.dumps(VALUE, pickle.HIGHEST_PROTOCOL)),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------- benchmarks


def check_hit(row: Row, got: Any, expected: Any) -> None:
    if got != expected:
        row.note = "NOT A HIT: the backend did not return the stored value"


def get_rows(use_tier: bool) -> tuple[list[tuple[Row, Callable[[], Any]]], list[Row]]:
    from django.core.cache import caches

    plan = [
        ("djredis.get", "django-redis get", "djredis", False, False),
        ("django.get", "Django RedisCache get", "django", False, False),
        ("locmem.get", "Django locmem get", "locmem", False, False),
        ("djredis.get_many", "django-redis get_many(100), 1 server", "djredis", True, False),
    ]
    if use_tier:
        plan += [
            ("tier1.get", "TierCache get, 2 tags, 1 partition", "tier1", False, True),
            ("tier1.get_untagged", "TierCache get, no tags, 1 partition", "tier1", False, False),
            ("tier4.get", "TierCache get, 2 tags, 4 partitions", "tier4", False, True),
            ("tier1.get_many", "TierCache get_many(100), 2 tags, 1 partition", "tier1", True, True),
            (
                "tier4.get_many",
                "TierCache get_many(100), 2 tags, 4 partitions",
                "tier4",
                True,
                True,
            ),
        ]
    rows, failed = [], []
    misses = [
        ("djredis.miss_one", "django-redis cache-aside miss of a key (get + set)", "djredis", 1),
        (
            "djredis.miss_many",
            "django-redis cache-aside miss of 100 keys (get_many + set_many)",
            "djredis",
            MANY_KEYS,
        ),
    ]
    if use_tier:
        misses += [
            (
                "tier1.miss_one",
                "TierCache get_or_set, a key missing, 2 tags, 1 partition",
                "tier1",
                1,
            ),
            (
                "tier1.miss_many",
                "TierCache get_or_set_many, 100 keys missing, 2 tags, 1 partition",
                "tier1",
                MANY_KEYS,
            ),
            (
                "tier4.miss_many",
                "TierCache get_or_set_many, 100 keys missing, 2 tags, 4 partitions",
                "tier4",
                MANY_KEYS,
            ),
        ]
    for key, label, alias, count in misses:
        rows.append((Row(key, label), missing(caches[alias], alias.startswith("tier"), count)))
    for key, label, alias, is_many, tagged in plan:
        row = Row(key, label)
        try:
            rows.append((row, prepare_get(row, caches[alias], is_many, tagged)))
        except Exception as exc:  # report the failing operation, keep measuring the rest
            failed.append(failed_row(row, exc))
    return rows, failed


def prepare_get(row: Row, cache, is_many: bool, tagged: bool) -> Callable[[], Any]:
    """Store the entries one get operation reads; return that operation."""
    tags = {"tags": TAGS} if tagged else {}
    if is_many:
        many = {f"many:{i}": VALUE for i in range(MANY_KEYS)}
        cache.set_many(many, TIMEOUT, **tags)
        fn = partial(cache.get_many, list(many))
        check_hit(row, fn(), many)
    else:
        name = "plain" if row.key.endswith("_untagged") else "k"
        cache.set(name, VALUE, TIMEOUT, **tags)
        fn = partial(cache.get, name)
        check_hit(row, fn(), VALUE)
    return fn


def missing(cache, tier_cache: bool, count: int) -> Callable[[], Any]:
    """A miss of `count` keys never read before, each call new ones: TierCache's
    get_or_set / get_or_set_many (claims, snapshot, store under tags), or the
    cache-aside by hand that django-redis' users write (get then set, or
    get_many then set_many)."""
    calls = itertools.count()

    def keys() -> list[str]:
        n = next(calls)
        return [f"miss{count}:{n}:{i}" for i in range(count)]

    def load(missing: list[str]) -> dict[str, Any]:
        return dict.fromkeys(missing, VALUE)

    def tier() -> dict[str, Any]:
        if count == 1:
            (key,) = keys()
            return {key: cache.get_or_set(key, partial(copy, VALUE), TIMEOUT, tags=TAGS)}
        return cache.get_or_set_many(dict.fromkeys(keys(), TAGS), load, TIMEOUT)

    def aside() -> dict[str, Any]:
        if count == 1:
            (key,) = keys()
            value = cache.get(key)
            if value is None:
                value = copy(VALUE)
                cache.set(key, value, TIMEOUT)
            return {key: value}
        wanted = keys()
        found = cache.get_many(wanted)
        loaded = load([k for k in wanted if k not in found])
        cache.set_many(loaded, TIMEOUT)
        return {**found, **loaded}

    fn = tier if tier_cache else aside
    first = fn()
    assert len(first) == count
    assert len(cache.get_many(list(first))) == count, "the miss stored nothing"
    return fn


def failed_row(row: Row, exc: Exception) -> Row:
    row.note = f"ERROR {type(exc).__name__}: {exc}"[:160]
    return row


def fill(cache, entries: int, batch_row: Row) -> None:
    for start in range(0, entries, FILL_BATCH):
        batch = {f"big:{i}": VALUE for i in range(start, min(start + FILL_BATCH, entries))}
        t0 = time.perf_counter_ns()
        cache.set_many(batch, TIMEOUT, tags=["big"])
        batch_row.samples_ns.append(time.perf_counter_ns() - t0)


def first_call(key: str, label: str, fn: Callable[[], Any]) -> Row:
    t0 = time.perf_counter_ns()
    fn()
    return Row(key, label, [float(time.perf_counter_ns() - t0)])


def invalidation_rows(alias: str, parts: str, cfg: Settings) -> list[Row]:
    from django.core.cache import caches

    cache = caches[alias]
    n = f"{cfg.big_entries:,}"
    fill_row = Row(f"{alias}.fill", f"TierCache set_many({FILL_BATCH}, 1 tag), per entry, {parts}")
    fill_row.calls_per_sample = FILL_BATCH
    fill(cache, cfg.big_entries, fill_row)
    cache.set("small:0", VALUE, TIMEOUT, tags=["small"])
    cache.set("control", VALUE, TIMEOUT)
    big = partial(cache.invalidate_tags, "big")
    small = partial(cache.invalidate_tags, "small")
    # The first call is timed alone: an implementation that deletes the
    # covered entries pays everything here and nothing on later calls. A tag
    # that covers nothing goes first, so script loading is not counted.
    cache.invalidate_tags("warmup")
    firsts = [
        first_call(
            f"{alias}.inv_big_first", f"invalidate_tags({n}-entry tag), first call, {parts}", big
        ),
        first_call(
            f"{alias}.inv_small_first", f"invalidate_tags(1-entry tag), first call, {parts}", small
        ),
    ]
    fill_row.note = invalidation_effect(cache)
    repeated = [
        (Row(f"{alias}.inv_big", f"invalidate_tags({n}-entry tag), {parts}"), big),
        (Row(f"{alias}.inv_small", f"invalidate_tags(1-entry tag), {parts}"), small),
    ]
    sample_interleaved(repeated, cfg.rounds, cfg.sample_ms)
    return [fill_row, *firsts, *(row for row, _ in repeated)]


def invalidation_effect(cache) -> str:
    """Say (not assert) whether the invalidation did what it claims."""
    probe = [f"big:{i}" for i in (0, 1, 2, 3, 997)]
    leaked = [k for k, v in cache.get_many(probe).items() if v is not None]
    problems = []
    if leaked:
        problems.append(f"{len(leaked)}/{len(probe)} big-tag entries still readable")
    if cache.get("small:0") is not None:
        problems.append("small-tag entry still readable")
    if cache.get("control") != VALUE:
        problems.append("untagged control entry lost")
    return "; ".join(problems) or ""


def per_call_fill(row: Row) -> None:
    # Fill samples are whole batches; report them per entry written.
    row.samples_ns = [s / row.calls_per_sample for s in row.samples_ns]


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="samples per operation (default 40, --quick 20)")
    parser.add_argument("--quick", action="store_true", help="run in well under 30 s")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    cfg = Settings(
        rounds=args.rounds or (20 if args.quick else 40),
        sample_ms=15 if args.quick else 40,
        big_entries=10_000 if args.quick else 100_000,
        quick=args.quick,
    )
    return cfg, args.json


def run(cfg: Settings, ports: list[int], problem: str) -> list[Row]:
    from django.core.cache import caches

    pairs, rows = get_rows(use_tier=not problem)
    sample_interleaved(pairs, cfg.rounds, cfg.sample_ms)
    rows = [row for row, _ in pairs] + rows
    if not problem:
        for alias, parts in (("tier1", "1 partition"), ("tier4", "4 partitions")):
            flush_db12(ports)  # each invalidation run starts from empty servers
            try:
                rows += invalidation_rows(alias, parts, cfg)
            except Exception as exc:  # report it, still run the other partition count
                rows.append(failed_row(Row(f"{alias}.inv_big", f"invalidation run, {parts}"), exc))
    for row in rows:
        if row.key.endswith(".fill"):
            per_call_fill(row)
    for cache in caches.all(initialized_only=True):
        cache.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    cfg, json_path = parse_args(argv)
    started = time.monotonic()
    with redis_servers(EXTRA_SERVERS) as ports:
        configure_django(ports)
        problem = tiercache_problem()
        info = machine_info(ports)
        print_header(info, cfg, problem)
        flush_db12(ports)
        try:
            rows = run(cfg, ports, problem)
        finally:
            flush_db12(ports)
    by_key = {r.key: r for r in rows}
    results = ratios(by_key)
    print_table(sorted(rows, key=display_position))
    print_ratios(results, by_key)
    elapsed = time.monotonic() - started
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"elapsed: {elapsed:.1f} s; load average at end: {load}")
    if json_path:
        write_json(json_path, info, cfg, rows, results, problem, elapsed)
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
