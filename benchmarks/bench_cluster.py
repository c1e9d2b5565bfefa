"""The Redis Cluster store on a local 3-master cluster (one replica each).

    python benchmarks/bench_cluster.py

Starts its own cluster on free loopback ports (tests/redis_servers.py) and stops
it. Prints: get and get_many(100) against redis-py's RedisCluster get and
mget_nonatomic on the same cluster, get and set with an L1 tier in front,
invalidate_tags against the number of slot groups, and the time from killing a
master to the first successful write to a slot group it served. Then, on a
Sentinel set (one primary, one replica, three sentinels): invalidate_tags as
shipped against invalidate_tags followed by WAIT for the replica (the
alternative the README weighs), and the time from killing the primary to the
first successful write.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

VALUE = {"id": 7, "name": "Blue mug", "price": "12.50", "tags": ["kitchen", "gift"]}
FAST = {"SOCKET_TIMEOUT": 0.25, "SOCKET_CONNECT_TIMEOUT": 0.25, "BREAKER_COOLDOWN": 0.3}


def per_call_us(fn, n: int = 3000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / n / 1000)
    return best


def tier_cache(url: str, groups: int = 8, **options):
    from django_tiercache.backend import TierCache

    opts = {"CLUSTER_SLOT_GROUPS": groups, **FAST, **options}
    return TierCache(url, {"KEY_PREFIX": f"b{uuid.uuid4().hex[:8]}", "OPTIONS": opts})


def reads(cluster) -> None:
    import redis

    seed = cluster.masters()[0]
    raw = redis.RedisCluster(host="127.0.0.1", port=seed.port)
    cache = tier_cache(cluster.url())
    keys = [f"k{i}" for i in range(100)]
    cache.set_many(dict.fromkeys(keys, VALUE))
    cache.set("tagged", VALUE, tags=["shop.product:7", "shop.shop:1"])
    body = pickle.dumps(VALUE)
    for key in keys:
        raw.set(f"raw:{key}", body)
    rows = [
        ("TierCache get", per_call_us(lambda: cache.get("k1"))),
        ("TierCache get (2 tags)", per_call_us(lambda: cache.get("tagged"))),
        ("RedisCluster get + unpickle", per_call_us(lambda: pickle.loads(raw.get("raw:k1")))),  # noqa: S301 - the bench's own bytes
        ("TierCache get_many(100)", per_call_us(lambda: cache.get_many(keys), 300)),
        (
            "RedisCluster mget_nonatomic(100) + unpickle",
            per_call_us(
                lambda: [pickle.loads(v) for v in raw.mget_nonatomic([f"raw:{k}" for k in keys])],  # noqa: S301
                300,
            ),
        ),
    ]
    rows += [
        ("TierCache set", per_call_us(lambda: cache.set("k1", VALUE))),
        ("RedisCluster set + pickle", per_call_us(lambda: raw.set("raw:k1", pickle.dumps(VALUE)))),
    ]
    print("\nreads and writes on a 3-master cluster, 8 slot groups (best of 5, us per call)")
    for label, us in rows:
        print(f"  {label:45} {us:8.1f}")
    print(f"  get / RedisCluster get            {rows[0][1] / rows[2][1]:.2f}x (target <= 1.2x)")
    print(f"  get_many / mget_nonatomic         {rows[3][1] / rows[4][1]:.2f}x (target <= 1.2x)")
    raw.close()


def l1(cluster) -> None:
    """get (an L1 hit) and set with an L1 tier in front of the cluster (SPUBLISH).
    Last of the cluster figures: its subscriber threads stay in the process."""
    keys = [f"k{i}" for i in range(100)]
    cache = tier_cache(cluster.url(), L1=True)
    cache.set_many(dict.fromkeys(keys, VALUE))
    deadline = time.monotonic() + 10
    while not all(s.live for s in cache._l1.slots) and time.monotonic() < deadline:
        cache.get("k1")  # the first read subscribes; fills count once the channels are up
        time.sleep(0.01)
    for _ in range(100):
        cache.get("k1")
    print("\nwith an L1 tier in front of the cluster (us per call)")
    print(f"  {'TierCache get, L1 on (hit)':45} {per_call_us(lambda: cache.get('k1')):8.1f}")
    print(f"  {'TierCache set, L1 on':45} {per_call_us(lambda: cache.set('k2', VALUE)):8.1f}")


def invalidation(cluster) -> None:
    print("\ninvalidate_tags(one tag) against the number of slot groups (us per call)")
    print(f"  {'groups':>6} {'invalidate':>11} {'tagged get':>11}")
    for groups in (1, 2, 4, 8, 16, 32):
        cache = tier_cache(cluster.url(), groups)
        cache.set("tagged", VALUE, tags=["shop.product:7"])
        inv = per_call_us(lambda cache=cache: cache.invalidate_tags("shop.product:7"), 500)
        cache.set("tagged", VALUE, tags=["shop.product:7"])
        get = per_call_us(lambda cache=cache: cache.get("tagged"), 2000)
        print(f"  {groups:>6} {inv:>11.1f} {get:>11.1f}")


def failover(cluster) -> None:
    import redis

    from tests.redis_servers import crash

    cache = tier_cache(cluster.url(), RAISE_ERRORS=True)
    first = cache._partitions[0]
    key = next(f"f{i}" for i in range(10_000) if cache._partition(cache.make_key(f"f{i}")) is first)
    cache.set(key, 1)
    victim = cluster.node_serving(first.store.slot)
    killed = time.monotonic()
    crash(victim)
    failed = 0
    while True:
        try:
            cache.set(key, 2)
            break
        except redis.RedisError:
            failed += 1
            time.sleep(0.01)
    after = time.monotonic() - killed
    print(
        f"\nkilled the master of a slot group: first successful write {after:.2f} s later "
        f"({failed} writes failed first; cluster-node-timeout 1000 ms)"
    )


def sentinel() -> None:
    import redis

    from tests.redis_servers import SentinelSet, crash

    sentinels = SentinelSet(Path(tempfile.mkdtemp(prefix="bench-sentinel-")))
    sentinels.start()
    try:
        cache = tier_cache(sentinels.url(), RAISE_ERRORS=True)
        cache.set("tagged", VALUE, tags=["shop.product:7"])
        primary = sentinels.primary.client()
        plain = per_call_us(lambda: cache.invalidate_tags("shop.product:7"), 1000)

        def waited() -> None:
            cache.invalidate_tags("shop.product:7")
            primary.wait(1, 1000)

        with_wait = per_call_us(waited, 1000)
        print("\nSentinel partition: invalidate_tags (us per call)")
        print(f"  as shipped (greeting + fences)   {plain:8.1f}")
        print(f"  followed by WAIT 1               {with_wait:8.1f}")
        killed = time.monotonic()
        crash(sentinels.primary)
        failed = 0
        while True:
            try:
                cache.set("probe", 1)
                break
            except redis.RedisError:
                failed += 1
                time.sleep(0.01)
        print(
            f"killed the primary: first successful write {time.monotonic() - killed:.2f} s "
            f"later ({failed} writes failed first; down-after-milliseconds 1000)"
        )
        primary.close()
    finally:
        sentinels.stop()


def main() -> None:
    import django

    django.setup()
    from tests.redis_servers import RedisClusterSet

    cluster = RedisClusterSet(Path(tempfile.mkdtemp(prefix="bench-cluster-")))
    cluster.start()
    try:
        reads(cluster)
        invalidation(cluster)
        l1(cluster)
        failover(cluster)
    finally:
        cluster.stop()
    sentinel()


if __name__ == "__main__":
    main()
