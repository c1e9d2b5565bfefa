"""The L1 tier on a Redis Cluster: sharded announcements, across real OS processes.

Each slot group SPUBLISHes its changes on a channel in its own slot; every
process SSUBSCRIBEs on the master serving it. A change made in one process is
not served from another's L1 once heard; a subscription that ends (killed, the
slot moved to another master, the master failed over) flushes the group's
copies until the new master confirms the subscription.
"""

from __future__ import annotations

import itertools
import json
import time

import pytest

from tests.redis_servers import crash
from tests.test_cluster import FAST, _migrate_keys, _move_slot, _start_migration
from tests.test_l1 import (  # noqa: F401 - workers is a fixture
    AFTER_CHANGE,
    CHANGES,
    L1,
    TAG,
    make_change,
    workers,
)


@pytest.fixture
def prefix():
    import uuid

    return f"cl1{uuid.uuid4().hex[:8]}"


def _store(cache, key: str):
    return cache._partition(cache.make_key(key)).store


_markers = itertools.count()


def _marker(cache, key: str) -> str:
    """A key of the same slot group as `key` (its channel is the same), never
    announced before: the reader's log still holds the earlier markers, and
    waiting for one of those would wait for nothing."""
    group = _store(cache, key)
    return next(f"marker{i}" for i in _markers if _store(cache, f"marker{i}") is group)


def _settle(cache, reader, key: str) -> None:
    """Announce a change to a marker of key's group and wait until the reader heard
    it: messages on one channel arrive in order, so it heard everything before."""
    store, marker = _store(cache, key), _marker(cache, key)
    store._master().execute_command(
        "SPUBLISH", store.channel, "k" + json.dumps([store.key_prefix + cache.make_key(marker)])
    )
    assert reader("wait_heard", marker), "the marker never arrived"


def _reader(workers, cluster, prefix):  # noqa: F811 - the fixture
    return workers(cluster.url(), prefix, {"L1": L1, **FAST})


def test_an_l1_on_a_cluster__subscribes_once_per_slot_group_on_its_master(
    clean_redis_cluster, make_cache, prefix
):
    from django_tiercache.storage.coherence import subscribers

    cache = make_cache(clean_redis_cluster.url(), KEY_PREFIX=prefix, L1=L1, **FAST)
    cache.get("warm-up")
    deadline = time.monotonic() + 10
    while not all(s.live for s in cache._l1.slots):
        assert time.monotonic() < deadline, "the groups' channels never came up"
        time.sleep(0.01)
    mine = [s for s in subscribers() if s.channel.startswith(prefix)]
    assert sorted(s.channel for s in mine) == sorted(p.store.channel for p in cache._partitions)
    assert all(s.sharded for s in mine)
    for partition in cache._partitions:  # each on the master that serves its slot
        master = clean_redis_cluster.node_serving(partition.store.slot)
        with master.client() as client:
            assert client.execute_command("PUBSUB", "SHARDNUMSUB", partition.store.channel)[1]


@pytest.mark.parametrize("change", CHANGES)
def test_change_in_another_process__is_not_served_once_heard(
    workers,  # noqa: F811 - the fixture
    clean_redis_cluster,
    make_cache,
    prefix,
    change,
):
    writer = make_cache(clean_redis_cluster.url(), KEY_PREFIX=prefix, **FAST)
    reader = _reader(workers, clean_redis_cluster, prefix)
    writer.set("k", 1, tags=[TAG])
    _settle(writer, reader, "k")
    assert reader("in_l1", "k")
    make_change(writer, change)
    _settle(writer, reader, "k")
    assert reader("get", "k") == AFTER_CHANGE.get(change)
    if change == "lock":
        writer.unlock_tags("writer-1", [TAG])


def test_killed_subscription__flushes_the_group_and_subscribes_again(
    workers,  # noqa: F811 - the fixture
    clean_redis_cluster,
    make_cache,
    prefix,
):
    writer = make_cache(clean_redis_cluster.url(), KEY_PREFIX=prefix, **FAST)
    reader = _reader(workers, clean_redis_cluster, prefix)
    writer.set("k", "v")
    _settle(writer, reader, "k")
    assert reader("in_l1", "k")
    master = clean_redis_cluster.node_serving(_store(writer, "k").slot)
    with master.client() as client:
        client.delete(_store(writer, "k").key_prefix + writer.make_key("k"))  # no message
        assert reader("get", "k") == "v"  # served by L1
        client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert reader("wait_gone", "k")
    assert reader("get", "k") is None
    assert reader("live")  # and it subscribes again


def test_a_slot_migration__changes_on_the_target_reach_l1_and_the_move_resubscribes(
    workers,  # noqa: F811 - the fixture
    fresh_redis_cluster,
    make_cache,
    prefix,
):
    """Mid-migration a write follows ASK to the importing master, whose shard the
    reader does not listen to: the writer announces "*" on the source first, so the
    reader's copies of the group go, and what the reader then reads from the target
    through ASK it does not keep. When the slot is handed over, the source ends the
    subscription: the reader flushes the group and subscribes on the new master,
    where it hears the next change."""
    cluster = fresh_redis_cluster
    writer = make_cache(cluster.url(), KEY_PREFIX=prefix, **FAST)
    reader = _reader(workers, cluster, prefix)
    store = _store(writer, "k")
    other = next(f"o{i}" for i in range(10_000) if _store(writer, f"o{i}") is store)
    writer.set("k", 1)
    writer.set(other, 1)
    _settle(writer, reader, "k")
    assert reader("in_l1", "k")
    assert reader("in_l1", other)
    source, target = _start_migration(cluster, store.slot)
    _migrate_keys(source, target, [store.key_prefix + writer.make_key("k")])
    writer.set("k", 2)  # on the target, through ASK
    assert reader("wait_gone", "k")
    assert reader("wait_gone", other)  # the "*": the whole group
    assert reader("get", "k") == 2
    assert reader("get", "k") == 2
    assert not reader("in_l1_now", "k")  # read from the target: not kept
    assert reader("in_l1", other)  # still on the source: kept

    _move_slot(cluster, store.slot, target)
    assert reader("wait_gone", other)  # the subscription on the source ended
    assert reader("live")
    assert reader("in_l1", "k")
    writer.set("k", 3)  # on the new master, announced on its shard
    _settle(writer, reader, "k")
    assert reader("get", "k") == 3


def test_a_master_failover__flushes_the_group_and_subscribes_on_the_promoted_replica(
    workers,  # noqa: F811 - the fixture
    fresh_redis_cluster,
    make_cache,
    prefix,
):
    cluster = fresh_redis_cluster
    writer = make_cache(cluster.url(), KEY_PREFIX=prefix, **FAST)
    reader = _reader(workers, cluster, prefix)
    store = _store(writer, "k")
    writer.set("k", 1)
    _settle(writer, reader, "k")
    assert reader("in_l1", "k")
    crash(cluster.node_serving(store.slot))
    assert reader("wait_gone", "k")
    cluster.wait_until(lambda: _writes(writer, "k", 2), "a write to the group after the failover")
    assert reader("live")  # on the promoted replica
    _settle(writer, reader, "k")
    assert reader("get", "k") == 2
    writer.set("k", 3)
    _settle(writer, reader, "k")
    assert reader("get", "k") == 3


def _writes(cache, key: str, value) -> bool:
    import redis

    try:
        cache.set(key, value)
    except redis.RedisError:
        return False
    return cache.get(key) == value


def test_a_change_on_the_importing_master_that_cannot_be_announced_on_the_source__is_not_made(
    workers,  # noqa: F811 - the fixture
    fresh_redis_cluster,
    make_cache,
    prefix,
):
    """MAX_LAG's promise: a write that returned more than MAX_LAG ago is not hidden by
    another process's copy. Mid-migration the write goes to the importing master, whose
    shard the reader does not listen to, and the reader's pings, answered by the source,
    go on proving it up to date: so the write's "*" goes to the source first, and when
    the source refuses it (as when it times out) the write is not made. Every read
    then answers what Redis holds."""
    cluster = fresh_redis_cluster
    lag = 0.5
    writer = make_cache(cluster.url(), KEY_PREFIX=prefix, **FAST)
    reader = workers(cluster.url(), prefix, {"L1": {**L1, "MAX_LAG": lag}, **FAST})
    store = _store(writer, "k")
    writer.set("k", 1)
    _settle(writer, reader, "k")
    assert reader("in_l1", "k")
    source, target = _start_migration(cluster, store.slot)
    _migrate_keys(source, target, [store.key_prefix + writer.make_key("k")])
    with source.client() as client:
        client.execute_command("ACL", "SETUSER", "default", "-spublish")
        try:
            writer.set("k", 2)  # through ASK: refused, as its "*" cannot be sent
            time.sleep(lag * 2)
            # Made anyway, the write would leave the reader's copy (1) hidden behind
            # pings that prove it current: every read must answer what Redis holds.
            reads = [reader("get", "k") for _ in range(20)]
        finally:
            client.execute_command("ACL", "SETUSER", "default", "+spublish")
    assert writer.get("k") == 1  # not made ...
    assert reads == [1] * 20  # ... and nobody was told otherwise
