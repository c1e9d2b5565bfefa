"""Benchmark cache warming: warm_cache against a loop of cache.set and against redis-benchmark.

Run from the repository root:

    python benchmarks/bench_warming.py [--keys N] [--rounds N] [--quick]

Warms ``--keys`` entries (default 100,000) of about 200 bytes each into a
TierCache on the shared Redis at 127.0.0.1:6379, database 14 only (flushed
before each sample and at the end, never anything else), three ways:

- a naive loop: ``for key, value in items: cache.set(key, value)``;
- ``manage.py warm_cache`` on a registered generator warmer (batches of 1000,
  concurrency 1, 2 and 4);
- ``redis-benchmark -P 50 -t set -n 200000 -d 200 -q --dbnum 14``: pipelined
  plain SETs of 200-byte values, the server's limit on this machine.

Each is sampled ``--rounds`` times (default 3), interleaved; the table gives
the median items/s and the ratios: warm_cache / naive loop (target >= 10) and
warm_cache / redis-benchmark (how close to the limit).
"""

from __future__ import annotations

import argparse
import io
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import django  # noqa: E402
from _sample import VALUE  # noqa: E402
from django.conf import settings  # noqa: E402

URL = "redis://127.0.0.1:6379/14"
DB = 14


def configure() -> None:
    settings.configure(
        SECRET_KEY="bench-only",  # noqa: S106
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_tiercache"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {
                "BACKEND": "django_tiercache.backend.TierCache",
                "LOCATION": URL,
                "KEY_PREFIX": "bench-warming",
                "TIMEOUT": 600,
            }
        },
        USE_TZ=True,
    )
    django.setup()


def items(count: int):
    for i in range(count):
        yield f"user:{i}", {**VALUE, "id": i}


def flush() -> None:
    from django.core.cache import caches

    caches["default"].clear()  # FLUSHDB on database 14 only


def naive_loop(count: int) -> float:
    from django.core.cache import caches

    cache = caches["default"]
    start = time.perf_counter()
    for key, value in items(count):
        cache.set(key, value)
    return time.perf_counter() - start


def warm_cache(count: int, concurrency: int) -> float:
    from django.core.management import call_command

    start = time.perf_counter()
    call_command(
        "warm_cache",
        "bench",
        "--batch-size",
        "1000",
        "--concurrency",
        str(concurrency),
        verbosity=0,
        stdout=io.StringIO(),
    )
    return time.perf_counter() - start


def redis_benchmark() -> float | None:
    """SETs per second that redis-benchmark reaches, pipelined 50 deep."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    args = "-P 50 -t set -n 200000 -d 200 -q --dbnum".split() + [str(DB)]
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=True)
    found = re.search(r"SET: ([\d.]+) requests per second", done.stdout)
    return float(found.group(1)) if found else None


def check(count: int) -> None:
    from django.core.cache import caches

    cache = caches["default"]
    last = f"user:{count - 1}"
    if cache.get(last) != {**VALUE, "id": count - 1}:
        raise SystemExit(f"warm_cache did not write {last}: the figures would be meaningless")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 keys, 1 round")
    args = parser.parse_args()
    count, rounds = (20_000, 1) if args.quick else (args.keys, args.rounds)
    configure()
    import django_tiercache

    django_tiercache.warmer("bench")(lambda: items(count))
    runs: dict[str, Callable[[], float]] = {
        "naive loop of cache.set": lambda: naive_loop(count),
        "warm_cache, concurrency 1": lambda: warm_cache(count, 1),
        "warm_cache, concurrency 2 (default)": lambda: warm_cache(count, 2),
        "warm_cache, concurrency 4": lambda: warm_cache(count, 4),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    limits: list[float] = []
    try:
        for _ in range(rounds):
            for name, run in runs.items():
                flush()
                rates[name].append(count / run())
                check(count)
            flush()
            limit = redis_benchmark()
            if limit is not None:
                limits.append(limit)
    finally:
        flush()
    report(count, rounds, {name: statistics.median(r) for name, r in rates.items()}, limits)


def report(count: int, rounds: int, rates: dict[str, float], limits: list[float]) -> None:
    print(f"bench_warming: {count:,} keys of ~200 bytes, {rounds} round(s), median items/s")
    print(f"Python {platform.python_version()}, Django {django.get_version()}, {platform.node()}")
    naive = rates["naive loop of cache.set"]
    limit = statistics.median(limits) if limits else None
    print(f"\n{'method':<36}{'items/s':>12}{'x naive':>10}{'of limit':>10}")
    for name, rate in rates.items():
        share = f"{rate / limit:.0%}" if limit else "n/a"
        print(f"{name:<36}{rate:>12,.0f}{rate / naive:>10.1f}{share:>10}")
    if limit:
        print(f"{'redis-benchmark -P 50 SET (limit)':<36}{limit:>12,.0f}{limit / naive:>10.1f}")
    best = max(v for k, v in rates.items() if k.startswith("warm_cache"))
    verdict = "PASS" if best / naive >= 10 else "MISS"
    print(f"\ntarget warm_cache >= 10x naive loop: {best / naive:.1f}x {verdict}")
    if limit:
        print(f"warm_cache / redis-benchmark -P 50: {best / limit:.2f}")


if __name__ == "__main__":
    main()
