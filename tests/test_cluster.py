"""Redis Cluster as storage: slot groups keep the tag contract, redirections and
failovers of masters serve nothing stale.

The session's cluster (conftest.redis_cluster) serves most tests; a test that
kills or moves something gets a cluster of its own (fresh_redis_cluster).
"""

import json
import threading
import time

import pytest
import redis
from redis.crc import key_slot

from django_tiercache.stats.partitions import describe
from django_tiercache.storage import options as options_module
from django_tiercache.storage.hooks import declare_lock_horizon
from django_tiercache.storage.stores import lua
from django_tiercache.storage.stores.cluster import (
    SLOTS,
    TRYAGAIN_PAUSES,
    group_hashtag,
    redirections,
)
from django_tiercache.storage.stores.slots import GEN_KEY, bucket_key, slot_of
from tests import stress
from tests.redis_servers import crash, cut_off_replica
from tests.test_checks import ids_for
from tests.test_failures import policy_count
from tests.testapp.models import Product

FAST = stress.FAST


def test_a_cluster_location__becomes_one_partition_per_slot_group():
    parsed = options_module.parse("redis+cluster://h1:7000,h2:7001/", {"CLUSTER_SLOT_GROUPS": 4})
    assert not parsed.problems
    assert parsed.urls == [f"redis+cluster://h1:7000,h2:7001/#{i}/4" for i in range(4)]


def test_a_cluster_mixed_with_plain_partitions__is_tiercache_e001():
    assert ids_for(["redis+cluster://h1:7000/", "redis://h2:6379/0"]) == ["tiercache.E001"]


def test_partition_names_with_a_cluster__are_tiercache_e004():
    assert ids_for("redis+cluster://h1:7000/", {"PARTITION_NAMES": ["a"]}) == ["tiercache.E004"]


@pytest.mark.parametrize(
    "location", ["redis+cluster:///", "redis+cluster://h1:x/", "redis+cluster://h1:7000/3"]
)
def test_bad_cluster_urls__are_tiercache_e001(location):
    assert ids_for(location) == ["tiercache.E001"]


def test_hot_keys_on_a_cluster__are_accepted():
    assert ids_for("redis+cluster://h1:7000/", {"HOT_KEYS": True}) == []


def test_the_hot_key_record_on_a_cluster__is_kept_by_every_slot_group(
    clean_redis_cluster, make_cache
):
    """Each group keeps a copy in its own slot (the script's keys share it), on the
    master serving it; the ranking reads them all."""
    from django_tiercache.hotkeys.record import record_of

    cache = make_cache(clean_redis_cluster.url(), HOT_KEYS={"SAMPLE": 1.0, "FLUSH": 3600}, **FAST)
    for _ in range(3):
        cache.get("a")
    cache.get_many(["a", "b"])
    record = record_of(cache)
    record.flush()
    assert record.top() == [(cache.make_key("a"), 4.0), (cache.make_key("b"), 1.0)]
    for partition in cache._partitions:
        master = clean_redis_cluster.node_serving(partition.store.slot)
        with master.client() as client:
            assert client.zscore(f"{partition.store.ns}hot", cache.make_key("a")) == 4.0
    record.remember({cache.make_key("a"): json.dumps(["model", "shop.product", "a", 1])})
    assert record.origins([cache.make_key("a")]) == {
        cache.make_key("a"): ["model", "shop.product", "a", 1]
    }


def test_an_l1_tier_on_a_cluster__is_accepted():
    assert ids_for("redis+cluster://h1:7000/", {"L1": True}) == []


def test_bad_slot_group_counts__are_tiercache_e003():
    assert ids_for("redis+cluster://h1:7000/", {"CLUSTER_SLOT_GROUPS": 0}) == ["tiercache.E003"]


@pytest.mark.parametrize("groups", [1, 3, 8, 64])
def test_slot_groups__each_sit_in_their_share_of_the_slot_space(groups):
    slots = [key_slot(group_hashtag(i, groups).encode()) for i in range(groups)]
    for i, slot in enumerate(slots):
        assert i * SLOTS // groups <= slot < (i + 1) * SLOTS // groups


def _keys_by_slot(cluster) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = {}
    for master in cluster.masters():
        with master.client() as client:
            for key in client.scan_iter(count=1000):
                found.setdefault(key_slot(key), []).append(key)
    return found


def test_an_entry_and_its_tag_tokens__share_the_slot_of_its_group(clean_redis_cluster, make_cache):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    cache.set_many({f"product:{i}": i for i in range(50)}, tags=["product"])
    cache.set("plain", 1)
    group_slots = {p.store.slot for p in cache._partitions}
    by_slot = _keys_by_slot(clean_redis_cluster)
    assert set(by_slot) <= group_slots  # nothing of the cache lies outside its groups
    for keys in by_slot.values():
        names = b" ".join(keys)
        # Every slot holding an entry also holds its tokens' bucket and the gen.
        if b"product:" in names:
            assert b":s:" in names and b":gen2" in names and b":meta" in names


def test_a_cluster_that_does_not_answer__is_an_unreachable_partition(closed_port_url, make_cache):
    """The cache is built (Django builds caches at startup and in checks), reads miss,
    writes are skipped, and RAISE_ERRORS shows a ConnectionError."""
    url = closed_port_url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0] + "/"
    strict = make_cache(url, CLUSTER_SLOT_GROUPS=2, RAISE_ERRORS=True, **FAST)
    with pytest.raises(redis.ConnectionError, match="no seed node of the cluster answered"):
        strict.get("k")
    cache = make_cache(url, CLUSTER_SLOT_GROUPS=2, **FAST)
    cache.set("k", 1)
    assert cache.get("k") is None
    assert cache.get_many(["a", "b", "c"]) == {}


@pytest.mark.parametrize(
    "feature", [{"HOT_KEYS": {"SAMPLE": 1.0, "FLUSH": 3600}}, {"L1": True}], ids=["hot", "l1"]
)
def test_a_cluster_that_does_not_answer__builds_with_hot_keys_and_l1_on(
    closed_port_url, make_cache, feature
):
    """The hot-key record and L1 keep clients of the cluster too: made at their first
    use, not when the cache is built, or a cluster down at start-up would fail every
    request that touches the cache."""
    from django_tiercache.backend import TierCache
    from django_tiercache.hotkeys.record import record_of

    url = closed_port_url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0] + "/"
    cache = make_cache(url, CLUSTER_SLOT_GROUPS=2, **FAST, **feature)
    assert type(cache) is TierCache
    cache.set("k", 1)
    assert cache.get("k") is None
    record = record_of(cache)
    if record is not None:
        record.flush()  # noted as an error, not raised
        assert record.top() == []


def test_slot_groups__spread_over_every_master(clean_redis_cluster, make_cache):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    serving = {clean_redis_cluster.node_serving(p.store.slot).port for p in cache._partitions}
    assert serving == {m.port for m in clean_redis_cluster.masters()}


def test_statistics__show_each_group_on_the_master_that_serves_its_slot(
    clean_redis_cluster, make_cache
):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    cache.set("k", 1)
    for partition in cache._partitions:
        where = describe(partition)
        master = clean_redis_cluster.node_serving(partition.store.slot)
        assert where["reachable"] and where["role"] == "cluster master"
        assert (where["address"], where["slot"]) == (
            f"127.0.0.1:{master.port}",
            partition.store.slot,
        )
    with master.client() as client:
        assert where["keys"] == client.dbsize()  # what that master holds, not a random node


def test_invalidation__hides_entries_in_every_group(clean_redis_cluster, make_cache):
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    keys = [f"product:{i}" for i in range(200)]
    cache.set_many(dict.fromkeys(keys, "v"), tags=["product"])
    assert len({cache._partition(cache.make_key(k)) for k in keys}) == len(cache._partitions)
    assert len(cache.get_many(keys)) == 200
    cache.invalidate_tags("product")
    assert cache.get_many(keys) == {}


def test_functions__are_loaded_on_a_master_that_lacks_them(clean_redis_cluster, make_cache):
    """A master that never had the library (a new node, or one restarted empty) gets it
    at its first call, like a standalone partition."""
    cache = make_cache(clean_redis_cluster.url(), **FAST)
    cache.set("k", 1)
    for master in clean_redis_cluster.masters():
        with master.client() as client:
            client.function_flush()
    for i in range(60):
        cache.set(f"k{i}", i, tags=["t"])
    assert len(cache.get_many([f"k{i}" for i in range(60)])) == 60
    for master in clean_redis_cluster.masters():
        with master.client() as client:
            libraries = [
                dict(zip(lib[::2], lib[1::2], strict=True))[b"library_name"]
                for lib in client.function_list()
            ]
        assert lua.CLUSTER_LIBRARY_NAME.encode() in libraries


def _fcalls(node) -> int:
    with node.client() as client:
        return int(client.info("commandstats").get("cmdstat_fcall", {}).get("calls", 0))


def test_a_multi_key_read__sends_every_group_its_call_before_reading_any_reply(
    fresh_redis_cluster, make_cache
):
    """get_many over two groups on two masters, the first group's master frozen: the
    second master receives its call while the first reply cannot have come yet."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), SOCKET_TIMEOUT=30, BREAKER_COOLDOWN=0.3)
    first = cache._partitions[0]
    frozen = cluster.node_serving(first.store.slot)
    other = next(p for p in cache._partitions if cluster.node_serving(p.store.slot) != frozen)
    keys = [
        next(f"k{i}" for i in range(10_000) if cache._partition(cache.make_key(f"k{i}")) is p)
        for p in (first, other)
    ]
    cache.get_many(keys)  # connections made and greeted
    answering = cluster.node_serving(other.store.slot)
    before = _fcalls(answering)
    frozen.pause()
    reader = threading.Thread(target=cache.get_many, args=(keys,))
    try:
        reader.start()
        cluster.wait_until(
            lambda: _fcalls(answering) > before,
            "the second group's call arrived",
            timeout=10,
        )
        assert reader.is_alive()  # still waiting for the frozen master's reply
    finally:
        frozen.resume()
        reader.join(40)


def _node_id(node) -> str:
    with node.client() as client:
        answer = client.execute_command("CLUSTER", "MYID")
    return answer.decode() if isinstance(answer, bytes) else answer


def _slot_of(cache, key: str) -> int:
    return cache._partition(cache.make_key(key)).store.slot


def _move_slot(cluster, slot: int, target, batch: int = 100, pause: float = 0.0) -> None:
    """Migrate one slot, keys included, to `target` (what a resharding does slot by slot)."""
    source = cluster.node_serving(slot)
    source_id, target_id = _node_id(source), _node_id(target)
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            time.sleep(pause)
    for master in cluster.masters():
        with master.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def test_a_group_slot_moved_to_a_new_master__is_followed_and_keeps_its_tags(
    fresh_redis_cluster, make_cache
):
    """A master joins the cluster and a group's slot is migrated to it: MOVED is
    followed, the new master gets the Functions at its first call, tags still work."""
    cluster = fresh_redis_cluster
    target = cluster.add_master()
    cache = make_cache(cluster.url(), **FAST)
    cache.set("product:1", "old", tags=["product"])
    slot = cache._partition(cache.make_key("product:1")).store.slot
    plain = next(f"plain{i}" for i in range(10_000) if _slot_of(cache, f"plain{i}") == slot)
    cache.set(plain, "kept")
    _move_slot(cluster, slot, target)
    assert cluster.node_serving(slot).port == target.port
    with target.client() as client:
        assert client.function_list() == []  # nothing loaded it there yet
    # The client's slot map still names the source: MOVED, a refresh, the call again.
    assert cache.get(plain) == "kept"
    # The group's meta hash moved with it and names the source's run_id: the
    # target's greeting cannot tell a move from a failover and drops the group's
    # tagged entries, once.
    assert cache.get("product:1") is None
    cache.set("product:1", "old", tags=["product"])
    assert cache.get("product:1") == "old"
    cache.invalidate_tags("product")
    assert cache.get("product:1") is None
    cache.set("product:1", "new", tags=["product"])
    assert cache.get("product:1") == "new"
    with target.client() as client:
        assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0
        assert len(client.function_list()) == 1


def _start_migration(cluster, slot: int, target=None):
    """Open a slot's migration (IMPORTING on the target, MIGRATING on the source)."""
    source = cluster.node_serving(slot)
    target = target or next(m for m in cluster.masters() if m.port != source.port)
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))
    return source, target


def _migrate_keys(source, target, keys: list[str]) -> None:
    with source.client() as src:
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)


def _same_group(cache, key: str, prefix: str, count: int) -> list[str]:
    slot = _slot_of(cache, key)
    return [k for k in (f"{prefix}{i}" for i in range(10_000)) if _slot_of(cache, k) == slot][
        :count
    ]


def test_calls_during_a_slot_migration__follow_ask_to_the_importing_master(
    fresh_redis_cluster, make_cache
):
    """Half a group's keys and its tag token have moved: reads, untagged writes, deletes
    and the invalidation of the moved token go through ASK (counted); a tagged write,
    which would create keys the source may still hold, is skipped; nothing is stale."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), **FAST)
    moved, kept = (
        _same_group(cache, "product:1", "p", 6)[:3],
        _same_group(cache, "product:1", "p", 6)[3:],
    )
    for key in moved + kept:
        cache.set(key, "v1")
    cache.set("product:1", "old", tags=["product"])
    partition = cache._partition(cache.make_key("product:1"))
    slot, ns = partition.store.slot, partition.store.ns
    source, target = _start_migration(cluster, slot)
    _migrate_keys(source, target, [partition.store.key_prefix + cache.make_key(k) for k in moved])
    _migrate_keys(source, target, [bucket_key(ns, "product")])  # the tag's token
    with target.client() as client:
        client.function_flush()  # as on a master that joined for the resharding
    before = redirections.snapshot().get("ask", 0)

    assert [cache.get(k) for k in moved] == ["v1"] * 3  # read on the target
    assert [cache.get(k) for k in kept] == ["v1"] * 3  # read on the source
    cache.set(moved[0], "v2")  # written on the target
    new = _same_group(cache, "product:1", "n", 1)[0]
    cache.set(new, "fresh")  # a new key goes to the target
    cache.delete(moved[1])
    assert cache.get(moved[0]) == "v2" and cache.get(new) == "fresh"
    assert cache.get(moved[1]) is None
    outcome = partition.run("drop_tags", ("product",))  # the token is on the target
    assert outcome.error is None
    assert cache.get("product:1") is None
    assert redirections.snapshot().get("ask", 0) - before >= 8
    with target.client() as client:  # loaded there by the first call sent with ASKING
        assert [lib[1] for lib in client.function_list()] == [lua.CLUSTER_LIBRARY_NAME.encode()]
    cache.set("product:1", "new", tags=["product"])  # tagged: not sent to the target
    assert cache.get("product:1") is None

    _move_slot(cluster, slot, target)  # the rest of the slot, and the slot itself
    assert cache.get(moved[0]) == "v2" and cache.get(new) == "fresh"
    assert cache.get(moved[1]) is None and cache.get(kept[0]) == "v1"
    assert cache.get("product:1") is None
    cache.set("product:1", "new", tags=["product"])
    assert cache.get("product:1") == "new"


def test_a_tagged_write_on_a_source_whose_meta_hash_has_moved__is_skipped_not_started_over(
    fresh_redis_cluster, make_cache
):
    """Mid-migration the group's meta hash and generation are on the target, its
    entry still on the source. The tagged write declares only the entry, which the
    source holds, so it runs there; were its reads of the meta hash answered "missing",
    it would start one over on the source (a second meta hash, new tokens in the slot,
    and MIGRATE refusing a key the target holds). Redis itself refuses a script's access
    to a key a migrating source no longer holds ("non local key"): the write fails and
    is skipped, the source gets no meta hash; once the slot has moved, it stores."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), **FAST)
    cache.set("product:1", "old", tags=["product"])
    assert cache.get("product:1") == "old"  # cached: the group takes tagged writes
    partition = cache._partition(cache.make_key("product:1"))
    slot, ns = partition.store.slot, partition.store.ns
    source, target = _start_migration(cluster, slot)
    _migrate_keys(source, target, [ns + "meta", ns + GEN_KEY])

    assert cache.set("product:1", "new", tags=["product"]) is False
    with source.client() as client:  # not started over there
        left = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    assert {k.decode() for k in left} & {ns + "meta", ns + GEN_KEY} == set()
    assert cache.get("product:1") != "new"

    _move_slot(cluster, slot, target)
    cache.set("product:1", "new", tags=["product"])
    assert cache.get("product:1") == "new"
    cache.invalidate_tags("product")
    assert cache.get("product:1") is None


def test_a_lease_moved_by_migrate__is_not_trusted_on_the_importing_master(
    fresh_redis_cluster, make_cache
):
    """MIGRATE restores a key with the TTL it had on the source, later: a lease can
    arrive on the importing master longer than the grants a fence waits out (here
    stretched by hand, as a slow move does). The group missed an invalidation and is
    fenced; its entry, read from the importing master, must not be served."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), TAG_LEASE=1.0, **FAST)
    cache.set("product:1", "old", tags=["product"])
    assert cache.get("product:1") == "old"
    partition = cache._partition(cache.make_key("product:1"))
    slot, ns = partition.store.slot, partition.store.ns
    source, target = _start_migration(cluster, slot)
    with source.client() as src:
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    _migrate_keys(source, target, keys)  # every key of the group, the lease too
    with target.client() as client:  # ASKING: the slot is still the source's
        asked = client.pipeline(transaction=False)
        asked.execute_command("ASKING")
        asked.pexpire(f"{ns}lease", 60_000)  # longer than any grant its peers noted
        assert asked.execute() == [True, True]
    cache._fencing.fence([partition], ("product",))  # waits out the grants
    assert cache.get("product:1") is None  # through ASK, from the importing master
    _move_slot(cluster, slot, target)
    assert cache.get("product:1") is None
    cache.set("product:1", "new", tags=["product"])
    assert cache.get("product:1") == "new"


def test_a_lost_or_foreign_lease__costs_a_renewal_and_a_fence_still_holds(
    clean_redis_cluster, make_cache
):
    """Any key can vanish: a group's lease deleted costs a renewal. A lease its master
    did not write (another node's id, or the standalone library's mark) counts as
    none, however long it says it runs: a fenced group is not trusted on it."""
    cluster = clean_redis_cluster
    cache = make_cache(cluster.url(), TAG_LEASE=1.0, **FAST)
    cache.set("product:1", "old", tags=["product"])
    assert cache.get("product:1") == "old"
    partition = cache._partition(cache.make_key("product:1"))
    lease = f"{partition.store.ns}lease"
    with cluster.node_serving(partition.store.slot).client() as client:
        client.delete(lease)
        assert cache.get("product:1") == "old"  # renewed, then read again
        assert client.get(lease) == client.execute_command("CLUSTER", "MYID")
        client.set(lease, "1", px=60_000)  # longer than any grant its peers noted
    cache._fencing.fence([partition], ("product",))  # it missed an invalidation
    assert cache.get("product:1") is None
    assert cache.get("product:1") is None


def test_a_fence_recorded_on_a_group_mid_migration__drops_what_it_filled_since_it_adopted_locks(
    fresh_redis_cluster, make_cache
):
    """A group that lost its memory and took its peers' locks drops what it filled
    since when a fence is recorded on it soon after (record_fence). Mid-migration its
    meta hash may have moved while its generation has not: the fence must not be
    recorded there as if the generation were dropped."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), TAG_LEASE=1.0, **FAST)
    partition = cache._partition(cache.make_key("product:1"))
    ns, slot = partition.store.ns, partition.store.slot
    # Every group greeted before the horizon counts: the servers are young.
    cache.get_many([_key_in(cache, p) for p in cache._partitions])
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", 30)
    with cluster.node_serving(slot).client() as client:
        client.delete(f"{ns}meta")  # evicted: its locks may be gone
    assert cache.set("product:1", "filled since", tags=["product"]) is None
    assert cache.get("product:1") == "filled since"
    assert policy_count(cache, "adopted") == 1
    other = next(p for p in cache._partitions if p is not partition)
    source, target = _start_migration(cluster, slot)
    _migrate_keys(source, target, [f"{ns}meta"])  # the generation stays on the source
    assert not partition.run("record_fence", [other.id], 1000).ok
    with source.client() as src:
        rest = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    _migrate_keys(source, target, rest)
    assert partition.run("record_fence", [other.id], 1000).ok
    assert cache.get("product:1") is None


def test_a_fence_recorded_on_a_group_mid_migration_without_a_generation__completes(
    fresh_redis_cluster, make_cache
):
    """A group's generation is absent after every fence or greeting until its next
    fill, and a migrating group's fills mostly fail. A fence recorded there touches
    the generation only in the window after the group adopted locks: out of it, a
    slot being migrated (nothing moved yet) must not make the fence incomplete."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), TAG_LEASE=1.0, **FAST)
    cache.get_many([_key_in(cache, p) for p in cache._partitions])
    cache.set("product:1", "old", tags=["product"])
    partition = cache._partition(cache.make_key("product:1"))
    ns, slot = partition.store.ns, partition.store.slot
    other = next(p for p in cache._partitions if p is not partition)
    with cluster.node_serving(slot).client() as client:
        assert client.delete(ns + GEN_KEY) == 1  # as a fence or a greeting leaves it
    _start_migration(cluster, slot)
    assert partition.run("record_fence", [other.id], 1000).ok


def test_a_write_lock_moved_with_its_slot__keeps_fills_out_whoever_greets_first(
    fresh_redis_cluster, make_cache
):
    """A writer holds a tag locked (its transaction under way) while the group's slot
    moves to another master. The first call there greets it and starts the group's
    meta hash over (it cannot tell a move from a failover). That call may come from
    a process that takes no locks itself and so knows no lock horizon (this one:
    none is declared for the cache's prefix): the lock moved with the slot, and must
    still keep out a fill made from data read before the writer commits."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), TAG_LEASE=1.0, **FAST)
    cache.set("product:1", "old", tags=["product"])
    assert cache.get("product:1") == "old"
    cache.lock_tags("writer-1", ["product"], 30)
    assert cache.get("product:1") is None  # invalidated by the lock
    slot = _slot_of(cache, "product:1")
    target = next(m for m in cluster.masters() if m.port != cluster.node_serving(slot).port)
    _move_slot(cluster, slot, target)
    # Read before the writer commits: computed, returned, and not stored.
    assert cache.get_or_set("product:1", lambda: "read before the commit", tags=["product"]) == (
        "read before the commit"
    )
    assert cache.get("product:1") is None
    cache.unlock_tags("writer-1", ["product"])
    cache.set("product:1", "new", tags=["product"])
    assert cache.get("product:1") == "new"


def test_a_call_on_keys_split_by_a_migration__is_retried_on_tryagain_then_fails_safe(
    fresh_redis_cluster, make_cache
):
    """Several keys of one group, some moved and some not: the target answers TRYAGAIN,
    the call is sent again a bounded number of times, then fails (misses; an
    invalidation so split is fenced and never served stale)."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), **FAST)
    keys = _same_group(cache, "product:1", "p", 4)
    cache.set_many(dict.fromkeys(keys, "v"))
    cache.set("product:1", "old", tags=["product", "shop"])
    partition = cache._partition(cache.make_key("product:1"))
    slot, ns, prefix = partition.store.slot, partition.store.ns, partition.store.key_prefix
    source, target = _start_migration(cluster, slot)
    # the entry and the bucket of "product"'s token ("shop"'s is another bucket)
    assert bucket_key(ns, "product") != bucket_key(ns, "shop")
    _migrate_keys(source, target, [prefix + cache.make_key(keys[0]), bucket_key(ns, "product")])
    before = redirections.snapshot().get("tryagain", 0)
    assert cache.get_many(keys) == {}  # one call for the group: retried, then a miss
    retried = redirections.snapshot().get("tryagain", 0) - before
    assert retried == len(TRYAGAIN_PAUSES) and retried > 0  # bounded, and retried
    outcome = partition.run("drop_tags", ("product", "shop"))  # tokens on both masters
    assert isinstance(outcome.error, redis.exceptions.TryAgainError)
    cache.invalidate_tags("product", "shop")  # goes through: the group is fenced
    _move_slot(cluster, slot, target)
    assert cache.get("product:1") is None
    assert cache.get_many(keys) == dict.fromkeys(keys, "v")


def test_master_failover__an_invalidation_its_replica_missed_is_never_served(
    fresh_redis_cluster, make_cache
):
    """A master acknowledges an invalidation and dies before its replica has it; the
    replica takes over with the old token and a copy of the group's meta hash. The
    greeting sees a new run_id and drops the group's tagged entries."""
    cluster = fresh_redis_cluster
    # Errors raise: a miss below must be a miss, not an unreachable group.
    cache = make_cache(cluster.url(), RAISE_ERRORS=True, **FAST)
    cache.set("product:1", "old", tags=["product"])
    slot = _slot_of(cache, "product:1")
    probe = next(f"probe{i}" for i in range(10_000) if _slot_of(cache, f"probe{i}") == slot)
    master = cluster.node_serving(slot)
    with master.client() as client:
        replicas = client.info("replication")
    replica = next(n for n in cluster.nodes if n.port == int(replicas["slave0"]["port"]))
    cut_off_replica(master, replica)
    cache.invalidate_tags("product")
    assert cache.get("product:1") is None
    crash(master)
    replica.resume()
    cluster.wait_until(lambda: cluster.role_of(replica) == "master", "replica promoted")
    with replica.client() as client:
        stale = [k for k in client.scan_iter(match="*product:1*") if client.get(k)[:1] == b"T"]
    assert stale, "the replica should still hold the entry the invalidation missed"
    cluster.wait_until(lambda: _writes(cache, probe), "a write to the group after the failover")
    assert cache.get(probe) == 1  # the group answers again, from the promoted replica
    assert cache.get("product:1") is None


def _writes(cache, key: str) -> bool:
    try:
        cache.set(key, 1)
    except redis.RedisError:
        return False
    return True


def _key_in(cache, partition) -> str:
    """A key of the cache that lives in `partition` (a slot group)."""
    return next(
        f"p{i}" for i in range(10_000) if cache._partition(cache.make_key(f"p{i}")) is partition
    )


def _disturbed_run(
    cluster, database_env: dict, make_cache, disturb, reader_role: str = "reader"
) -> tuple[dict, stress.Probe]:
    """Writers and readers on PostgreSQL over the cluster (tests/stress.py) while
    `disturb(cache)` runs 3 s in, with `cache` a RAISE_ERRORS cache of the same
    prefix for its stress.Probe, which it returns: the run's summary and the probe.
    reader_role "areader": the readers read through the async API."""
    setting = stress.cache_setting(cluster.url(), "cl")
    env = {**database_env, "TIERCACHE_TEST_CACHE": json.dumps(setting)}
    pks = [Product.objects.create(name=f"k{i}").pk for i in range(12)]
    cache = make_cache(
        cluster.url(), KEY_PREFIX=setting["KEY_PREFIX"], RAISE_ERRORS=True, **stress.FAST
    )
    return stress.run_disturbed(env, pks, lambda: disturb(cache), reader_role=reader_role)


@pytest.mark.django_db(transaction=True)
def test_master_killed_mid_traffic__no_stale_reads_and_writes_come_back(
    shared_database_env, fresh_redis_cluster, make_cache, capsys
):
    """A master is killed mid-run: no reader goes back in time, and writes to its
    group fail only until its replica is promoted."""
    cluster = fresh_redis_cluster

    def kill(cache) -> stress.Probe:
        group = cache._partitions[0]
        with stress.Probe(cache, [_key_in(cache, group)]) as probe:
            killed = time.monotonic()
            crash(cluster.node_serving(group.store.slot))
            probe.disturbed(since=killed)
        return probe

    totals, probe = _disturbed_run(cluster, shared_database_env, make_cache, kill)
    stress.show(capsys, stress.describe("cluster, master killed", totals, probe.figures()))
    stress.assert_no_stale_reads_and_bounded_errors(totals, probe)


@pytest.mark.django_db(transaction=True)
def test_slots_migrated_mid_traffic__no_stale_reads(
    shared_database_env, fresh_redis_cluster, make_cache, capsys
):
    """Every group's slot is moved to another master mid-run (keys migrated while
    the writers invalidate and the readers fill): calls follow ASK to the importing
    masters (counted), no reader goes back in time, and writes to the groups fail,
    if at all, for a bounded time."""
    cluster = fresh_redis_cluster

    def migrate_all(cache) -> stress.Probe:
        return _migrate_every_group(cluster, cache)

    totals, probe = _disturbed_run(cluster, shared_database_env, make_cache, migrate_all)
    note = f"{len(probe.keys)} slots migrated, {probe.figures()}"
    stress.show(capsys, stress.describe("cluster, slots migrated", totals, note))
    stress.assert_no_stale_reads_and_bounded_errors(totals, probe)
    assert totals["redirections"].get("ask", 0) > 0, "no call met the migrations halfway"


def _migrate_every_group(
    cluster, cache, coroutines: bool = False, batch: int = 2, pause: float = 0.05
) -> stress.Probe:
    """Move every group's slot to another master, `batch` keys every `pause` s,
    while a stress.Probe writes to each group (through coroutines if asked)."""
    keys = [_key_in(cache, group) for group in cache._partitions]
    with stress.Probe(cache, keys, coroutines=coroutines) as probe:
        for group in cache._partitions:
            source = cluster.node_serving(group.store.slot)
            target = next(m for m in cluster.masters() if m.port != source.port)
            _move_slot(cluster, group.store.slot, target, batch=batch, pause=pause)
        probe.disturbed()
    return probe


def _replica_of(cluster, master):
    with master.client() as client:
        port = int(client.info("replication")["slave0"]["port"])
    return next(n for n in cluster.nodes if n.port == port)


def _fail_over_to(cluster, replica, master) -> None:
    """A manual failover (CLUSTER FAILOVER): `replica` takes its master's slots, and
    the old master, still running, replicates from it. No process restarts."""
    for attempt in range(3):  # a manual failover times out now and then (5 s): again
        with replica.client() as client:
            client.execute_command("CLUSTER", "FAILOVER")
        try:
            cluster.wait_until(lambda: cluster.role_of(replica) == "master", "promoted", 8)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    cluster.wait_until(lambda: cluster.role_of(master) == "slave", "the master demoted")
    cluster.wait_until(cluster._healthy, "the cluster healthy again")


def test_a_master_failed_back_to__is_greeted_again_on_connections_it_kept_open(
    fresh_redis_cluster, make_cache
):
    """A group's master hands its slot to its replica and later takes it back (two
    manual failovers; a forced one may lose the last writes it was sent). The
    server never restarted and kept the sockets of the process open, but what it
    holds now is a copy of the other's data, which may lack a write lock taken
    there: a fill on such a socket must meet the greeting's check, as on a new one."""
    cluster = fresh_redis_cluster
    cache = make_cache(cluster.url(), TAG_LEASE=1.0, **FAST)
    cache.set("product:1", "old", tags=["product"])
    assert cache.get("product:1") == "old"  # a greeted connection to the master
    slot = _slot_of(cache, "product:1")
    master = cluster.node_serving(slot)
    replica = _replica_of(cluster, master)
    _fail_over_to(cluster, replica, master)
    assert cache.get("product:1") is None  # the promoted replica's greeting dropped it
    cache.lock_tags("writer-1", ["product"], 30)  # h: the longest lock taken there
    ns = cache._partition(cache.make_key("product:1")).store.ns
    with master.client() as client:
        client.execute_command("READONLY")  # a replica now
        cluster.wait_until(
            lambda: client.hexists(f"{ns}meta", f"l:{slot_of('product')}"), "the lock replicated"
        )
    _fail_over_to(cluster, master, replica)
    with master.client() as client:
        client.hdel(f"{ns}meta", f"l:{slot_of('product')}")  # as a forced failover may lose it
    assert cache.set("product:1", "read before the commit", tags=["product"]) is False
