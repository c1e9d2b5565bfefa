"""The async API against django-redis' and raw redis.asyncio, in one run.

    python benchmarks/bench_async.py [--rounds 7] [--concurrency 200]

On one throw-away redis-server (loopback), with the same 210-byte pickled dict:

- 200 concurrent ``aget``s in one event loop (asyncio.gather), ops/s: TierCache
  (native, storage/bridge.py), django-redis' ``aget`` (sync_to_async, Django's
  default), and raw redis.asyncio GET + pickle.loads (the floor). The raw client
  and TierCache get one connection per coroutine (max_connections=200; raw
  redis.asyncio's pool raises past its limit instead of waiting); TierCache with
  its default pool of 100 per loop, where half the coroutines wait for a
  connection, is shown too;
- one ``aget`` awaited alone against one sync ``get`` (µs per call).

Each figure is the median of --rounds rounds; the last line gives the ratios
the README quotes as name=value pairs. No L1 (it would serve from memory).

With ``--cluster``, the same on a local 3-master Redis Cluster (one replica
each, tests/redis_servers.py) instead: TierCache's native ``aget`` on its slot
groups, the same cache through ``sync_to_async`` (how its Cluster calls ran
before they were native), and raw ``redis.asyncio.cluster.RedisCluster`` GET +
pickle.loads, each with one connection per coroutine per node.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from benchmarks._servers import redis_servers  # noqa: E402

VALUE = {"id": 7, "name": "x" * 120, "price": "19.90", "tags": ["a", "b", "c"], "stock": 3}


def configure(port: int, concurrency: int) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    settings.configure(
        SECRET_KEY="bench-async",  # noqa: S106 - a throw-away benchmark process
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "tier": {
                "BACKEND": "django_tiercache.backend.TierCache",
                "LOCATION": url,
                "KEY_PREFIX": "tier",
                "OPTIONS": {"CONNECTION_POOL_KWARGS": {"max_connections": concurrency}},
            },
            "tier_default_pool": {
                "BACKEND": "django_tiercache.backend.TierCache",
                "LOCATION": url,
                "KEY_PREFIX": "tier",
            },
            "djr": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "KEY_PREFIX": "djr",
            },
        },
    )
    django.setup()


async def concurrent(aget, key: str, concurrency: int, batches: int) -> float:
    """ops/s of `concurrency` coroutines each awaiting aget(key), `batches` times."""
    started = time.perf_counter()
    for _ in range(batches):
        await asyncio.gather(*[aget(key) for _ in range(concurrency)])
    return concurrency * batches / (time.perf_counter() - started)


async def lone(aget, key: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await aget(key)
    return (time.perf_counter() - started) / calls * 1e6


def sync_lone(get, key: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        get(key)
    return (time.perf_counter() - started) / calls * 1e6


async def measure(port: int, rounds: int, concurrency: int) -> dict[str, list[float]]:
    import redis.asyncio as aioredis
    from django.core.cache import caches

    tier, djr, tier_default = caches["tier"], caches["djr"], caches["tier_default_pool"]
    tier.set("k", VALUE)
    djr.set("k", VALUE)
    raw = aioredis.Redis(port=port, max_connections=concurrency)
    raw_key = "raw:k"
    await raw.set(raw_key, pickle.dumps(VALUE))

    async def raw_aget(key: str):
        return pickle.loads(await raw.get(key))  # noqa: S301 - the benchmark's own bytes

    assert await tier.aget("k") == VALUE and await djr.aget("k") == VALUE
    figures: dict[str, list[float]] = {name: [] for name in ("tier", "djr", "raw", "tier_100")}
    figures.update({"tier_lone": [], "tier_sync": [], "djr_lone": [], "raw_lone": []})
    batches = max(1, 4000 // concurrency)
    for _ in range(rounds):
        figures["raw"].append(await concurrent(raw_aget, raw_key, concurrency, batches))
        figures["tier"].append(await concurrent(tier.aget, "k", concurrency, batches))
        figures["djr"].append(await concurrent(djr.aget, "k", concurrency, batches))
        figures["tier_100"].append(await concurrent(tier_default.aget, "k", concurrency, batches))
        figures["tier_lone"].append(await lone(tier.aget, "k", 500))
        figures["tier_sync"].append(sync_lone(tier.get, "k", 500))
        figures["djr_lone"].append(await lone(djr.aget, "k", 500))
        figures["raw_lone"].append(await lone(raw_aget, raw_key, 500))
    await raw.aclose()
    return figures


async def measure_cluster(url: str, seed: int, rounds: int, concurrency: int) -> dict:
    import redis.asyncio.cluster as aiocluster

    from django_tiercache.backend import TierCache

    params = {
        "KEY_PREFIX": "tier",
        "OPTIONS": {"CONNECTION_POOL_KWARGS": {"max_connections": concurrency}},
    }
    native, hopping = TierCache(url, params), TierCache(url, params)
    hopping.native_async = False  # sync_to_async over the sync RedisCluster
    native.set("k", VALUE)
    raw = aiocluster.RedisCluster(host="127.0.0.1", port=seed, max_connections=concurrency)
    raw_key = "raw:k"
    await raw.set(raw_key, pickle.dumps(VALUE))

    async def raw_aget(key: str):
        return pickle.loads(await raw.get(key))  # noqa: S301 - the benchmark's own bytes

    assert await native.aget("k") == VALUE and await hopping.aget("k") == VALUE
    names = ("tier", "tier_thread", "raw", "tier_lone", "tier_sync", "raw_lone")
    figures: dict[str, list[float]] = {name: [] for name in names}
    batches = max(1, 4000 // concurrency)
    for _ in range(rounds):
        figures["raw"].append(await concurrent(raw_aget, raw_key, concurrency, batches))
        figures["tier"].append(await concurrent(native.aget, "k", concurrency, batches))
        figures["tier_thread"].append(await concurrent(hopping.aget, "k", concurrency, batches))
        figures["tier_lone"].append(await lone(native.aget, "k", 500))
        figures["tier_sync"].append(sync_lone(native.get, "k", 500))
        figures["raw_lone"].append(await lone(raw_aget, raw_key, 500))
    await raw.aclose()
    return figures


def cluster_main(rounds: int, concurrency: int) -> None:
    import tempfile

    from tests.redis_servers import RedisClusterSet

    cluster = RedisClusterSet(Path(tempfile.mkdtemp(prefix="bench-async-cluster-")))
    cluster.start()
    try:
        configure(cluster.masters()[0].port, concurrency)
        figures = asyncio.run(
            measure_cluster(cluster.url(), cluster.masters()[0].port, rounds, concurrency)
        )
    finally:
        cluster.stop()
    median = medians_and_heading(
        figures, "--cluster", f"{concurrency} concurrent aget()s, 3-master cluster", rounds
    )
    print(f"| raw redis.asyncio RedisCluster GET + pickle.loads | {median['raw']:,.0f} |")
    print(f"| TierCache aget (native) | {median['tier']:,.0f} |")
    print(f"| TierCache aget (sync_to_async) | {median['tier_thread']:,.0f} |")
    print()
    print(
        f"cluster_concurrent_tier/raw={median['tier'] / median['raw']:.2f} "
        f"cluster_concurrent_tier/sync_to_async={median['tier'] / median['tier_thread']:.2f} "
        f"cluster_lone_aget/sync_get={median['tier_lone'] / median['tier_sync']:.2f} "
        f"cluster_lone_raw_asyncio/sync_get={median['raw_lone'] / median['tier_sync']:.2f}"
    )


def medians_and_heading(figures: dict, variant: str, what: str, rounds: int) -> dict:
    """The medians of a run's figures, once its heading and the ops/s table's head are printed."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    title = f"bench_async {variant}".strip()
    print(f"# {title}  {time.strftime('%Y-%m-%d')}  {os.cpu_count()} cores, load {load}")
    print(f"# {what}, medians of {rounds} rounds")
    print()
    print("| caller | ops/s |")
    print("| --- | ---: |")
    return {name: statistics.median(values) for name, values in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--cluster", action="store_true", help="on a local Redis Cluster")
    args = parser.parse_args()
    if args.cluster:
        cluster_main(args.rounds, args.concurrency)
        return
    with redis_servers(1) as (port,):
        configure(port, args.concurrency)
        figures = asyncio.run(measure(port, args.rounds, args.concurrency))
    median = medians_and_heading(
        figures, "", f"{args.concurrency} concurrent aget()s in one loop", args.rounds
    )
    print(f"| raw redis.asyncio GET + pickle.loads | {median['raw']:,.0f} |")
    print(f"| TierCache aget (native) | {median['tier']:,.0f} |")
    print(f"| TierCache aget (native), default pool of 100 | {median['tier_100']:,.0f} |")
    print(f"| django-redis aget (sync_to_async) | {median['djr']:,.0f} |")
    print()
    print("| one call, awaited alone | µs |")
    print("| --- | ---: |")
    print(f"| TierCache aget | {median['tier_lone']:.0f} |")
    print(f"| TierCache get (sync) | {median['tier_sync']:.0f} |")
    print(f"| django-redis aget | {median['djr_lone']:.0f} |")
    print(f"| raw redis.asyncio GET + pickle.loads | {median['raw_lone']:.0f} |")
    print()
    print(
        f"concurrent_tier/raw={median['tier'] / median['raw']:.2f} "
        f"concurrent_tier/djredis={median['tier'] / median['djr']:.2f} "
        f"concurrent_tier_pool100/raw={median['tier_100'] / median['raw']:.2f} "
        f"lone_aget/sync_get={median['tier_lone'] / median['tier_sync']:.2f} "
        f"lone_raw_asyncio/sync_get={median['raw_lone'] / median['tier_sync']:.2f}"
    )


if __name__ == "__main__":
    main()
