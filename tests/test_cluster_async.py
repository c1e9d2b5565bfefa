"""The async API on a Redis Cluster: native (storage/bridge.py), on redis.asyncio
connections of the running loop, routed by the same slot map as the sync calls.

Each async method is run by tests/test_async.py on the session's cluster too
(any_location); here, what is the cluster's own: mixing with sync callers
across slot groups, redirections followed by coroutines (MOVED, ASK with
ASKING, TRYAGAIN), a stopped or killed master, cancellation, closed loops.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
from asgiref.sync import async_to_sync

from django_tiercache.storage import bridge
from django_tiercache.storage.stores.cluster import TRYAGAIN_PAUSES, redirections
from django_tiercache.storage.stores.slots import bucket_key
from tests import stress
from tests.redis_servers import crash
from tests.test_async import cancelled_mid_call
from tests.test_cluster import (
    FAST,
    _disturbed_run,
    _key_in,
    _migrate_every_group,
    _migrate_keys,
    _move_slot,
    _same_group,
    _start_migration,
)


def run(coroutine):
    return asyncio.run(coroutine)


def _keys_on_every_group(cache, per_group: int = 6) -> list[str]:
    """`per_group` keys in each slot group of the cache."""
    found: dict[object, list[str]] = {p: [] for p in cache._partitions}
    for i in range(100_000):
        in_group = found[cache._partition(cache.make_key(f"product:{i}"))]
        if len(in_group) < per_group:
            in_group.append(f"product:{i}")
        if all(len(keys) == per_group for keys in found.values()):
            break
    return [key for keys in found.values() for key in keys]


def test_async_calls__run_on_the_loops_connections_in_the_callers_thread(
    clean_redis_cluster, make_cache
):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    assert cache.native_async
    threads, made = [], []

    def load():
        threads.append(threading.get_ident())
        return 1

    async def scenario():
        assert await cache.aget_or_set("k", load, tags=["t"]) == 1
        await cache.aset_many(dict.fromkeys(_keys_on_every_group(cache), "v"))
        made.extend(p.store.loop_pool().made for p in cache._partitions)

    run(scenario())
    assert threads == [threading.get_ident()]  # no thread hop
    assert all(made), "every group's master was reached on redis.asyncio connections"


def test_sync_and_async_callers__read_each_others_entries_and_honour_each_others_invalidations(
    clean_redis_cluster, make_cache
):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    keys = _keys_on_every_group(cache)
    cache.set_many(dict.fromkeys(keys, "from sync"), tags=["product"])

    async def scenario():
        assert await cache.aget_many(keys) == dict.fromkeys(keys, "from sync")
        await cache.aset_many(dict.fromkeys(keys, "from async"), tags=["product"])
        read_by_sync = await asyncio.to_thread(cache.get_many, keys)
        await asyncio.to_thread(cache.invalidate_tags, "product")  # made by a thread
        after_sync_invalidation = await cache.aget_many(keys)
        await cache.aset_many(dict.fromkeys(keys, "again"), tags=["product"])
        before = await cache.aget_many(keys)
        await cache.ainvalidate_tags("product")  # made by a coroutine
        return read_by_sync, after_sync_invalidation, before

    read_by_sync, after_sync_invalidation, before = run(scenario())
    assert read_by_sync == dict.fromkeys(keys, "from async")
    assert after_sync_invalidation == {}
    assert before == dict.fromkeys(keys, "again")  # served until the async invalidation
    assert cache.get_many(keys) == {}


def test_a_closed_loop__leaves_no_cluster_connection_the_next_loop_trips_on(
    clean_redis_cluster, make_cache
):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    keys = _keys_on_every_group(cache, 3)
    pools = []

    async def write_and_read(i):
        await cache.aset_many(dict.fromkeys(keys, i))
        pools.append(cache._partitions[0].store.loop_pool())
        return await cache.aget_many(keys)

    for i in range(3):
        assert run(write_and_read(i)) == dict.fromkeys(keys, i)
    assert len({id(pool) for pool in pools}) == 3  # a pool per loop, none reused
    assert async_to_sync(cache.aget)(keys[0]) == 2
    assert cache.get(keys[0]) == 2


def test_a_stopped_master__never_delays_coroutines_reading_the_other_groups(
    clean_redis_cluster, make_cache
):
    """A master SIGSTOPped (briefly: the cluster would fail it over after its node
    timeout): 100 coroutines reading the other masters' groups all answer while a
    read on the stopped one still waits."""
    cluster = clean_redis_cluster
    cache = make_cache(cluster.url(), SOCKET_TIMEOUT=5)
    stalled_group = cache._partitions[0]
    stalled = cluster.node_serving(stalled_group.store.slot)
    on_stalled = _key_in(cache, stalled_group)
    others = [
        k
        for k in (f"o{i}" for i in range(2000))
        if cluster.node_serving(cache._partition(cache.make_key(k)).store.slot) != stalled
    ][:100]
    cache.set_many(dict.fromkeys(others, 1))
    cache.set(on_stalled, "late")

    async def scenario():
        await cache.aget_many([*others, on_stalled])  # connections made before the stall
        stalled.pause()
        try:
            hung = asyncio.ensure_future(cache.aget(on_stalled))
            await asyncio.sleep(0.05)
            values = await asyncio.gather(*[cache.aget(key) for key in others])
            still_waiting = not hung.done()
        finally:
            stalled.resume()
        return values, still_waiting, await hung

    values, still_waiting, late = run(scenario())
    assert values == [1] * len(others)
    assert still_waiting  # all 100 answered while the stalled read waited
    assert late == "late"  # answered once the master ran again


def test_cancelled_mid_call__returns_its_connection_and_leaves_no_claim(
    clean_redis_cluster, make_cache
):
    cluster = clean_redis_cluster
    cache = make_cache(
        cluster.url(), SOCKET_TIMEOUT=5, CONNECTION_POOL_KWARGS={"max_connections": 1}
    )
    group = cache._partition(cache.make_key("k"))
    warm = next(
        f"w{i}" for i in range(10_000) if cache._partition(cache.make_key(f"w{i}")) is group
    )
    master = cluster.node_serving(group.store.slot)
    # The one connection of the pool is back (else these would wait, then miss).
    assert run(cancelled_mid_call(cache, warm, master)) == (2, 1)
    with master.client() as client:
        assert [k for k in client.keys("*") if b"sf:" in k] == []


def test_coroutines_during_a_slot_migration__follow_ask_and_mix_with_sync_callers(
    fresh_redis_cluster, make_cache
):
    """As the sync test of test_cluster.py: half a group's keys and its tag token
    (its bucket of the slot table) moved, here read, written and invalidated by
    coroutines (ASK counted), a tagged write skipped, and a thread reading what
    they wrote on the target."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), **FAST)
    group_keys = _same_group(cache, "product:1", "p", 6)
    moved, kept = group_keys[:3], group_keys[3:]
    cache.set_many(dict.fromkeys(moved + kept, "v1"))
    cache.set("product:1", "old", tags=["product"])
    partition = cache._partition(cache.make_key("product:1"))
    store = partition.store
    source, target = _start_migration(cluster, store.slot)
    _migrate_keys(source, target, [store.key_prefix + cache.make_key(k) for k in moved])
    _migrate_keys(source, target, [bucket_key(store.ns, "product")])  # the tag's token
    with target.client() as client:
        client.function_flush()  # as on a master that joined for the resharding
    new = _same_group(cache, "product:1", "n", 1)[0]
    before = redirections.snapshot().get("ask", 0)

    async def during():
        read = [await cache.aget(k) for k in moved + kept]
        await cache.aset(moved[0], "v2")  # written on the target
        await cache.aset(new, "fresh")  # a new key goes to the target
        await cache.adelete(moved[1])
        outcome = await bridge.run(partition.run, "drop_tags", ("product",))
        await cache.aset("product:1", "new", tags=["product"])  # tagged: not sent there
        return read, outcome.error, await cache.aget("product:1")

    read, error, tagged_after = run(during())
    assert read == ["v1"] * 6 and error is None
    assert tagged_after is None
    assert redirections.snapshot().get("ask", 0) - before >= 7
    assert cache.get(moved[0]) == "v2" and cache.get(new) == "fresh"  # a thread reads them
    assert cache.get(moved[1]) is None

    _move_slot(cluster, store.slot, target)  # the rest of the slot, and the slot itself
    moved_before = redirections.snapshot().get("moved", 0)

    async def after():
        values = await cache.aget_many([moved[0], moved[1], kept[0], new, "product:1"])
        await cache.aset("product:1", "newer", tags=["product"])
        return values, await cache.aget("product:1")

    values, tagged_again = run(after())
    assert values == {moved[0]: "v2", kept[0]: "v1", new: "fresh"}
    assert tagged_again == "newer"
    assert redirections.snapshot().get("moved", 0) > moved_before  # MOVED followed too


def test_a_coroutine_on_keys_split_by_a_migration__is_retried_on_tryagain_then_misses(
    fresh_redis_cluster, make_cache
):
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), **FAST)
    keys = _same_group(cache, "product:1", "p", 4)
    cache.set_many(dict.fromkeys(keys, "v"))
    store = cache._partition(cache.make_key(keys[0])).store
    assert run(cache.aget_many(keys)) == dict.fromkeys(keys, "v")
    source, target = _start_migration(cluster, store.slot)
    _migrate_keys(source, target, [store.key_prefix + cache.make_key(keys[0])])
    before = redirections.snapshot().get("tryagain", 0)
    assert run(cache.aget_many(keys)) == {}  # one call for the group: retried, then a miss
    retried = redirections.snapshot().get("tryagain", 0) - before
    assert retried == len(TRYAGAIN_PAUSES) and retried > 0
    _move_slot(cluster, store.slot, target)
    assert run(cache.aget_many(keys)) == dict.fromkeys(keys, "v")


def test_a_killed_master__fails_its_groups_coroutines_until_its_replica_takes_over(
    fresh_redis_cluster, make_cache
):
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), RAISE_ERRORS=True, **FAST)
    group = cache._partitions[0]
    key, other = _key_in(cache, group), _key_in(cache, cache._partitions[-1])
    cache.set_many({key: 1, other: 2})
    master = cluster.node_serving(group.store.slot)
    assert cluster.node_serving(cache._partitions[-1].store.slot) != master

    async def until_written() -> tuple[int, object]:
        failures, deadline = 0, time.monotonic() + stress.ERROR_TIME_BOUND
        while time.monotonic() < deadline:
            try:
                await cache.aset(key, 3)
                return failures, await cache.aget(key)
            except redis.RedisError:
                failures += 1
                assert await cache.aget(other) == 2  # the other groups answer meanwhile
                await asyncio.sleep(0.05)
        return failures, None

    crash(master)
    failures, value = run(until_written())
    assert failures > 0 and value == 3  # failed, then written on the promoted replica


@pytest.mark.django_db(transaction=True)
def test_slots_migrated_mid_traffic__async_readers_see_no_stale_reads(
    shared_database_env, fresh_redis_cluster, make_cache, capsys
):
    """test_cluster.py's migration run with readers that read through coroutines,
    and a probe writing through them: ASK followed on the loop, nothing stale."""
    cluster = fresh_redis_cluster

    def migrate_all(cache) -> stress.Probe:
        # Slower than the sync run's: a coroutine reader's cache reads come between
        # database reads in a thread, fewer of them meet a slot halfway.
        return _migrate_every_group(cluster, cache, coroutines=True, batch=1, pause=0.1)

    totals, probe = _disturbed_run(
        cluster, shared_database_env, make_cache, migrate_all, reader_role="areader"
    )
    note = f"{len(probe.keys)} slots migrated, {probe.figures()}"
    stress.show(capsys, stress.describe("cluster async, slots migrated", totals, note))
    stress.assert_no_stale_reads_and_bounded_errors(totals, probe)
    assert totals["redirections"].get("ask", 0) > 0, "no call met the migrations halfway"


@pytest.mark.django_db(transaction=True)
def test_master_killed_mid_traffic__async_readers_see_no_stale_reads(
    shared_database_env, fresh_redis_cluster, make_cache, capsys
):
    cluster = fresh_redis_cluster

    def kill(cache) -> stress.Probe:
        group = cache._partitions[0]
        with stress.Probe(cache, [_key_in(cache, group)], coroutines=True) as probe:
            killed = time.monotonic()
            crash(cluster.node_serving(group.store.slot))
            probe.disturbed(since=killed)
        return probe

    totals, probe = _disturbed_run(
        cluster, shared_database_env, make_cache, kill, reader_role="areader"
    )
    stress.show(capsys, stress.describe("cluster async, master killed", totals, probe.figures()))
    stress.assert_no_stale_reads_and_bounded_errors(totals, probe)
