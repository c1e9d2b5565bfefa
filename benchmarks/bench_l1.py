"""The L1 tier: hit cost, a model instance's hit cost (get_object), cross-process
invalidation latency, admission hit rate, single flight and a Zipf read mix against django-redis.

    TIERCACHE_BENCH_REDIS_URL=redis://127.0.0.1:6379/7 python benchmarks/bench_l1.py

Keys live under a fresh prefix; nothing else in the database is touched.
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import OrderedDict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
URL = os.environ.get("TIERCACHE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
L1 = {"MAX_ENTRIES": 20_000, "MAX_BYTES": 64 * 2**20, "TIMEOUT": 30}
VALUE = {"id": 7, "name": "Blue mug", "price": "12.50", "tags": ["kitchen", "gift"]}


def tier_cache(prefix: str, l1: bool = True):
    from django_tiercache.backend import TierCache

    return TierCache(URL, {"KEY_PREFIX": prefix, "OPTIONS": {"L1": L1} if l1 else {}})


def until_kept(cache, key):
    while cache.make_key(key) not in cache._l1.entries:
        cache.get(key)
        time.sleep(0.001)


def per_call_us(fn, n=20_000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / n / 1000)
    return best


def hit_cost() -> None:
    from django.core.cache.backends.locmem import LocMemCache

    locmem = LocMemCache("bench", {})
    locmem.set("k", VALUE)
    cache = tier_cache(f"b{uuid.uuid4().hex[:8]}")
    cache.set("plain", VALUE)
    cache.set("tagged", VALUE, tags=["shop.product:7", "shop.shop:1"])
    until_kept(cache, "plain")
    until_kept(cache, "tagged")
    base = per_call_us(lambda: locmem.get("k"))
    plain = per_call_us(lambda: cache.get("plain"))
    tagged = per_call_us(lambda: cache.get("tagged"))
    print(f"locmem get                     {base:6.2f} us")
    print(f"L1 hit                         {plain:6.2f} us   {plain / base:4.2f}x locmem")
    print(f"L1 hit, 2 tags (+2 families)   {tagged:6.2f} us   {tagged / base:4.2f}x locmem")


def paired_us(fns: dict, n=2_000, rounds=15) -> dict[str, list[float]]:
    """{name: us per call in each round}: each round times every function once, in turn,
    so a burst of other work on a shared machine lands on one round of all of them."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter_ns()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter_ns() - started) / n / 1000)
    return times


def paired_ratio(times: dict[str, list[float]], name: str, anchor: str) -> float:
    """The median of the rounds' ratios name/anchor."""
    return statistics.median(t / a for t, a in zip(times[name], times[anchor], strict=True))


def model_hit_cost() -> None:
    """A registered model's instance read on a hit, as a view reads it: get_object() through
    L1 against the cache-aside code of benchmarks/loadapp (get, else query and set) on Django's
    LocMemCache (an in-process dict, the floor) and on django-redis, in the same run."""
    from django.core.cache.backends.locmem import LocMemCache
    from django.test import override_settings
    from django_redis.cache import RedisCache

    import django_tiercache
    from django_tiercache.orm.cache_aside import object_entry
    from tests.testapp.models import Shelf

    prefix = f"b{uuid.uuid4().hex[:8]}"
    shelf = Shelf(pk=7, name="Kitchen")
    caches = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": URL,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"L1": L1},
        }
    }
    locmem = LocMemCache("bench", {})
    theirs = RedisCache(URL, {"KEY_PREFIX": prefix + "dr"})
    for other in (locmem, theirs):
        other.set("shelf:7", shelf)
    with override_settings(CACHES=caches):
        from django.core.cache import caches as django_caches

        cache = django_caches["default"]
        key, value, tags = object_entry(shelf)
        cache.set(key, value, tags=tags)
        until_kept(cache, key)
        times = paired_us(
            {
                "locmem": lambda: locmem.get("shelf:7"),
                "ours": lambda: django_tiercache.get_object(Shelf, 7),
                "django-redis": lambda: theirs.get("shelf:7"),
            }
        )
        cache.delete(key)
    theirs.delete("shelf:7")
    us = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"get_object, L1 hit             {us['ours']:6.2f} us   "
        f"{paired_ratio(times, 'ours', 'locmem'):4.2f}x locmem  "
        f"{paired_ratio(times, 'ours', 'django-redis'):4.2f}x django-redis"
    )
    print(f"cache-aside get, locmem        {us['locmem']:6.2f} us")
    print(f"cache-aside get, django-redis  {us['django-redis']:6.2f} us")


def reader(prefix: str) -> None:
    """--reader: keep 'k' in L1, report (monotonic) when each change was heard."""
    import django

    django.setup()
    cache = tier_cache(prefix)
    made = cache.make_key("k")
    for _line in sys.stdin:
        until_kept(cache, "k")
        print("ready", flush=True)
        while made in cache._l1.entries:
            pass
        print(time.monotonic(), flush=True)


def invalidation_latency(rounds: int = 200) -> None:
    prefix = f"b{uuid.uuid4().hex[:8]}"
    cache = tier_cache(prefix, l1=False)
    cache.set("k", 0)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--reader", prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    latencies = []
    for i in range(rounds):
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready"
        started = time.monotonic()
        cache.set("k", i)
        latencies.append((float(proc.stdout.readline()) - started) * 1000)
    proc.stdin.close()
    proc.wait()
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"cross-process invalidation     p50 {p50:.2f} ms   p99 {p99:.2f} ms  ({rounds} sets)")


def zipf(n: int, s: float, count: int, rng: random.Random) -> list[int]:
    weights = list(itertools.accumulate(1 / (i + 1) ** s for i in range(n)))
    total = weights[-1]
    return [bisect.bisect(weights, rng.random() * total) for _ in range(count)]


def lru_hit_rate(trace: list[int], size: int) -> float:
    lru: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for key in trace:
        if key in lru:
            hits += 1
            lru.move_to_end(key)
        else:
            lru[key] = None
            if len(lru) > size:
                lru.popitem(last=False)
    return hits / len(trace)


def tinylfu_hit_rate(trace: list[int], size: int) -> float:
    from django_tiercache.storage.admission import WTinyLFU

    cache = WTinyLFU(size, 2**62)
    hits = 0
    for key in trace:
        if cache.get(key) is not None:
            hits += 1
        else:
            cache.put(key, True, 1)
    return hits / len(trace)


def hit_rates() -> None:
    rng = random.Random(12)
    plain = zipf(100_000, 0.9, 300_000, rng)
    scan = list(plain)
    start = len(scan) // 3
    scan[start:start] = list(range(200_000, 300_000))  # a one-off scan of 100,000 cold keys
    for name, trace in (("Zipf(0.9)", plain), ("Zipf(0.9) + scan", scan)):
        lru, tiny = lru_hit_rate(trace, 1000), tinylfu_hit_rate(trace, 1000)
        print(f"hit rate, {name:<18} W-TinyLFU {tiny:6.1%}   LRU {lru:6.1%}  (1,000 entries)")


def flight(prefix: str, counter: str) -> None:
    """--flight: 25 threads miss one cold key at once."""
    import threading

    import django
    import redis

    django.setup()
    cache = tier_cache(prefix)
    counts = redis.Redis.from_url(URL)
    barrier = threading.Barrier(25)

    def load():
        counts.incr(counter)
        time.sleep(0.2)
        return VALUE

    def call():
        barrier.wait()
        cache.get_or_set("cold", load, 60)

    threads = [threading.Thread(target=call) for _ in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def single_flight() -> None:
    import redis

    prefix, counter = f"b{uuid.uuid4().hex[:8]}", f"bench:{uuid.uuid4().hex}"
    procs = [
        subprocess.Popen([sys.executable, __file__, "--flight", prefix, counter]) for _ in "ab"
    ]
    for p in procs:
        p.wait()
    loads = int(redis.Redis.from_url(URL).get(counter) or 0)
    redis.Redis.from_url(URL).delete(counter)
    print(f"50 callers (25 threads x 2 processes) on a cold key: {loads} loader call(s)")


def read_mix() -> None:
    from django_redis.cache import RedisCache

    prefix = f"b{uuid.uuid4().hex[:8]}"
    keys = [f"item:{i}" for i in range(10_000)]
    trace = [keys[i] for i in zipf(10_000, 0.9, 50_000, random.Random(3))]
    ours = tier_cache(prefix)
    theirs = RedisCache(URL, {"KEY_PREFIX": prefix + "dr"})
    for cache in (ours, theirs):
        cache.set_many(dict.fromkeys(keys, VALUE), 300)
    for name, cache in (("TierCache + L1", ours), ("django-redis", theirs)):
        for key in trace[:10_000]:  # warm-up (fills L1)
            cache.get(key)
        started = time.perf_counter()
        for key in trace:
            cache.get(key)
        rate = len(trace) / (time.perf_counter() - started)
        print(f"Zipf(0.9) reads, 10,000 keys   {name:<15} {rate:9,.0f} req/s")
    ours.delete_many(keys)
    theirs.delete_many(keys)


def main() -> None:
    if sys.argv[1:2] == ["--reader"]:
        return reader(sys.argv[2])
    if sys.argv[1:2] == ["--flight"]:
        return flight(sys.argv[2], sys.argv[3])
    import platform

    import django

    django.setup()
    machine = f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# bench_l1  {time.strftime('%Y-%m-%d')}  {machine}  (load average {load})")
    hit_cost()
    if sys.argv[1:2] == ["--model"]:  # the model hit alone
        return model_hit_cost()
    model_hit_cost()
    invalidation_latency()
    hit_rates()
    single_flight()
    read_mix()


if __name__ == "__main__":
    main()
