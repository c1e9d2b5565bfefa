"""What statistics cost a get: TierCache with TIERCACHE["STATS"] on against off.

Run from the repository root:

    python benchmarks/bench_stats.py [--rounds N] [--quick] [--url redis://127.0.0.1:6379/13]

One cache of each kind (Redis, memory://) is built from settings.CACHES with
statistics on: it counts, and the process publishes to Redis in the background
every STATS_INTERVAL seconds, as in production. Between samples its recorder is
detached and attached again (what TIERCACHE["STATS"] = False does when a cache
is built), so "off" and "on" differ in nothing else. Each sample times many
back-to-back hits of one key, and samples of on and off alternate, so noise on
the machine and the shared Redis falls on both alike.
Target: a get from Redis costs at most 5% more with statistics on.

The keys live under the prefixes bench-stats-*; the script deletes those keys
and nothing else.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

TARGET = 1.05
VALUE = {"id": 48213, "username": "ada.lovelace", "groups": ["editors", "reviewers"]}


def time_calls(fn: Callable[[], Any], calls: int) -> tuple[float, float]:
    """Mean wall-clock and CPU ns per call over `calls` back-to-back calls, GC paused."""
    gc.disable()
    try:
        wall, cpu = time.perf_counter_ns(), time.process_time_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - wall) / calls, (time.process_time_ns() - cpu) / calls
    finally:
        gc.enable()


def calls_per_sample(fn: Callable[[], Any], sample_ms: float) -> int:
    time_calls(fn, 50)
    return max(1, int(sample_ms * 1e6 / max(time_calls(fn, 200)[0], 1.0)))


def configure(url: str) -> None:
    import django
    from django.conf import settings

    def tiercache(location: str, prefix: str) -> dict[str, Any]:
        return {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": location,
            "KEY_PREFIX": f"bench-stats-{prefix}",
            "TIMEOUT": 600,
        }

    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",  # noqa: S106
        INSTALLED_APPS=[],
        USE_TZ=True,
        CACHES={
            "redis": tiercache(url, "redis"),
            "memory": tiercache("memory://bench-stats", "memory"),
        },
        TIERCACHE={"STATS_INTERVAL": 5.0},
    )
    django.setup()


class Switch:
    """Statistics on or off for one cache instance: what TIERCACHE["STATS"] decides
    when the cache is built, switched here between samples so that both sides use
    the very same connections, keys and memory."""

    def __init__(self, cache: Any):
        from django_tiercache.stats.collection import NULL

        self.cache, self.recorder, self.null = cache, cache._observer, NULL

    def set(self, on: bool) -> None:
        self.cache._observer = self.recorder if on else self.null
        for partition in self.cache._partitions:
            partition.observer = self.recorder if on else None


def cases() -> list[tuple[str, str, Switch, Callable[[], Any]]]:
    """(row, on|off, switch, function) for every timed case."""
    from django.core.cache import caches

    rows = []
    for kind in ("redis", "memory"):
        cache = caches[kind]
        switch = Switch(cache)
        for tagged in (False, True):
            key = f"k-{'tagged' if tagged else 'plain'}"
            cache.set(key, VALUE, tags=["shop.product:7", "shop.product"] if tagged else ())
            name = f"get, {kind}{', 2 tags' if tagged else ''}"
            for side in ("on", "off"):
                rows.append((name, side, switch, lambda c=cache, k=key: c.get(k)))
    return rows


def run(rows: list, rounds: int, sample_ms: float) -> dict:
    sizes = {}
    for name, side, switch, fn in rows:
        switch.set(side == "on")
        sizes[(name, side)] = calls_per_sample(fn, sample_ms)
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in sizes}
    for r in range(rounds):
        order = rows if r % 2 == 0 else rows[::-1]
        for name, side, switch, fn in order:
            switch.set(side == "on")
            samples[(name, side)].append(time_calls(fn, sizes[(name, side)]))
    return samples


def report(samples: dict, url: str, rounds: int) -> int:
    import django

    print(f"bench_stats: {platform.platform()}, Python {platform.python_version()}, "
          f"Django {django.__version__}, redis {redis_version(url)}, {rounds} rounds")  # fmt: skip
    print()
    print("median: µs per get, median sample; paired: median of the per-round on/off ratios;")
    print("+min µs: fastest sample on minus fastest off, the estimate least disturbed by noise")
    print()
    print(
        f"{'operation':<22} {'off µs':>8} {'on µs':>8} {'on/off':>7} {'paired':>7} "
        f"{'+min µs':>8} {'+cpu µs':>8}"
    )
    measured, added, redis_off = 0.0, 0.0, []
    for name in dict.fromkeys(n for n, _ in samples):
        off, on = samples[(name, "off")], samples[(name, "on")]
        wall_off, wall_on = (statistics.median(s[0] for s in x) / 1000 for x in (off, on))
        cpu_off, cpu_on = (statistics.median(s[1] for s in x) / 1000 for x in (off, on))
        fastest = (min(s[0] for s in on) - min(s[0] for s in off)) / 1000
        paired = statistics.median(a[0] / b[0] for a, b in zip(on, off, strict=True))
        print(
            f"{name:<22} {wall_off:>8.2f} {wall_on:>8.2f} {wall_on / wall_off:>7.3f} "
            f"{paired:>7.3f} {fastest:>8.2f} {cpu_on - cpu_off:>8.2f}"
        )
        if name.startswith("get, redis"):
            measured = max(measured, paired)
            redis_off.append(wall_off)
        else:  # in-process: the same counting code, with no network noise around it
            added = max(added, fastest)
    estimate = (min(redis_off) + added) / min(redis_off)
    print()
    verdict = "PASS" if measured <= TARGET else "MISS"
    print(f"target: get from Redis, stats on <= {TARGET:.2f}x stats off")
    print(f"  measured (paired median):                        {measured:.3f} {verdict}")
    verdict = "PASS" if estimate <= TARGET else "MISS"
    print(f"  counting cost ({added:.2f} µs, memory://) / Redis get: {estimate:.3f} {verdict}")
    return 0


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return client.info("server")["redis_version"]
    finally:
        client.close()


def cleanup(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter("bench-stats-*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/13", help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=40, help="samples per row (default 40)")
    parser.add_argument("--quick", action="store_true", help="10 rounds of shorter samples")
    args = parser.parse_args()
    rounds, sample_ms = (10, 20.0) if args.quick else (args.rounds, 60.0)
    configure(args.url)
    try:
        samples = run(cases(), rounds, sample_ms)
        return report(samples, args.url, rounds)
    finally:
        cleanup(args.url)


if __name__ == "__main__":
    sys.exit(main())
