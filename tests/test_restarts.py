"""After a partition restarts: which tagged writes are refused, for how long, and
that the caller is told.

A partition that lost its memory (a restart without persistence) may have lost
write locks, and fences it kept for its peers; the guarantee then makes partitions
refuse tagged writes for the write-lock horizon (storage/tags.py). These tests
assert the order of events: which partition refuses, that set() says so, and
that a witness, or a third partition, lets the healthy ones go on at once. How long the refusals
last is measured by benchmarks/bench_restarts.py, not asserted here.
"""

from __future__ import annotations

import time

import pytest

from django_tiercache.storage.hooks import declare_lock_horizon
from django_tiercache.storage.stores.slots import slot_of
from tests.stress import FAST
from tests.test_failures import keys_on, policy_count

LEASE = 0.3


@pytest.fixture(autouse=True)
def witness_connections_closed():
    from django_tiercache.orm.witness import close_connections

    yield
    close_connections()


def restarted(server, cache):
    """Stop the server and start it empty, then let the cache's breaker and the
    healthy partition's lease run out, so that the next calls meet the restart."""
    server.stop()
    server.start()
    time.sleep(max(FAST["BREAKER_COOLDOWN"], LEASE) + 0.1)


def partitions(servers, make_cache, horizon, **options):
    cache = make_cache([s.url for s in servers], TAG_LEASE=LEASE, **FAST, **options)
    for server in servers:  # meet each before the horizon counts: they are young
        cache.get(keys_on(cache, server.url, count=1, prefix="greeting")[0])
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", horizon)
    return cache


def two_partitions(clean_redis_servers, make_cache, horizon, **options):
    healthy, peer = clean_redis_servers[0], clean_redis_servers[1]
    return partitions([healthy, peer], make_cache, horizon, **options), healthy, peer


def locked_before(servers, make_cache, monkeypatch, tag):
    """A cache over `servers`, each greeted, that locked and released `tag` once as a
    writer's process does (a 30 s lock horizon, declared until the test undoes it):
    (the cache, its namespace). The partitions now know how long its locks last."""
    from django_tiercache.storage import hooks

    cache = make_cache([s.url for s in servers], TAG_LEASE=LEASE, **FAST)
    ns = f"{cache.key_prefix}:_tc:"
    for server in servers:
        cache.get(keys_on(cache, server.url, count=1, prefix="greeting")[0])
    monkeypatch.setitem(hooks._lock_horizons, ns, 30_000)
    cache.lock_tags("writer-0", [tag], 30)  # an earlier transaction, committed
    cache.unlock_tags("writer-0", [tag])
    return cache, ns


def tagged_writes(cache, servers):
    """Per server: did a tagged set() store (None) or was it refused (False); what get() gives."""
    events = []
    for server in servers:
        (key,) = keys_on(cache, server.url, count=1)
        events.append((cache.set(key, "after", tags=["t"]), cache.get(key)))
    return events


def test_a_tagged_write_a_quiet_partition_refuses__returns_false_and_counts_as_refused(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.get("greeting")
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", 30)
    assert cache.set("tagged", 1, tags=["t"]) is None  # stored: Django's set() says nothing
    server.client().delete(f"{cache.key_prefix}:_tc:meta")  # locks held there may be gone
    assert cache.set("tagged", 2, tags=["t"]) is False
    assert cache.set_many({"a": 1, "b": 2}, tags=["t"]) == ["a", "b"]
    assert policy_count(cache, "refused", server.url) == 3
    assert cache.set("plain", 3) is None  # untagged entries are never refused
    assert cache.get("plain") == 3
    assert policy_count(cache, "refused") == 3


def test_after_a_peer_restarts__without_a_witness_both_partitions_refuse_tagged_writes(
    clean_redis_servers, make_cache
):
    """The restarted peer may have held the only fence for a missed lock: nothing
    else knows of that lock, so the healthy partition too refuses fills until it
    has expired. The caller is told."""
    cache, healthy, peer = two_partitions(clean_redis_servers, make_cache, horizon=30)
    (on_healthy,) = keys_on(cache, healthy.url, count=1)
    (on_peer,) = keys_on(cache, peer.url, count=1)
    assert cache.set(on_healthy, "before", tags=["t"]) is None
    restarted(peer, cache)
    events = [
        (where, cache.set(key, "after", tags=["t"]), cache.get(key))
        for where, key in (("healthy", on_healthy), ("peer", on_peer))
    ]
    assert events == [("healthy", False, None), ("peer", False, None)]
    assert policy_count(cache, "refused", healthy.url) == 1
    assert policy_count(cache, "refused", peer.url) == 1


@pytest.mark.django_db(transaction=True)
def test_after_a_peer_restarts__with_a_witness_the_healthy_partition_writes_at_once(
    clean_redis_servers, make_cache
):
    """The witness holds every fence: when it knows of no miss for the healthy
    partition, the fences the peer forgot held nothing for it, and no lock it
    could have missed exists. When it knows of no miss at all, every lock the
    restarted peer lost is held by the healthy one too, which lends them: both
    write at once."""
    cache, healthy, peer = two_partitions(
        clean_redis_servers, make_cache, horizon=30, WITNESS="database"
    )
    (on_healthy,) = keys_on(cache, healthy.url, count=1)
    (on_peer,) = keys_on(cache, peer.url, count=1)
    assert cache.set(on_healthy, "before", tags=["t"]) is None
    restarted(peer, cache)
    events = [
        (where, cache.set(key, "after", tags=["t"]), cache.get(key))
        for where, key in (("healthy", on_healthy), ("peer", on_peer))
    ]
    assert events == [("healthy", None, "after"), ("peer", None, "after")]
    assert policy_count(cache, "refused") == 0
    assert policy_count(cache, "adopted", peer.url) == 1
    cache.invalidate_tags("t")  # and invalidation still reaches what they wrote
    assert cache.get_many([on_healthy, on_peer]) == {}


@pytest.mark.django_db(transaction=True)
def test_after_a_peer_restarts__with_a_witness_the_healthy_partition_keeps_its_entries(
    clean_redis_servers, make_cache
):
    """Every complete fence is on the witness: when it knows of no miss for the
    healthy partition, the fences the peer forgot held nothing for it, so its
    tagged entries are as good as before and still served."""
    cache, healthy, peer = two_partitions(
        clean_redis_servers, make_cache, horizon=30, WITNESS="database"
    )
    (on_healthy,) = keys_on(cache, healthy.url, count=1)
    assert cache.set(on_healthy, "before", tags=["t"]) is None
    restarted(peer, cache)
    assert cache.get(on_healthy) == "before"
    assert policy_count(cache, "fenced", healthy.url) == 0
    cache.invalidate_tags("t")
    assert cache.get(on_healthy) is None


@pytest.mark.django_db(transaction=True)
def test_with_a_witness__a_partition_that_missed_an_invalidation_is_still_fenced_after_a_restart(
    clean_redis_servers, make_cache
):
    """The shortcut above must not skip a real miss: the healthy partition missed
    an invalidation (and so perhaps a lock), recorded on the peer and the witness;
    the peer then restarts. The witness still knows, and the partition drops its
    entries and refuses tagged writes."""
    cache, victim, peer = two_partitions(
        clean_redis_servers, make_cache, horizon=30, WITNESS="database", BREAKER_FAILURES=1
    )
    keys = keys_on(cache, victim.url, count=2)
    cache.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, "old")
    victim.pause()
    assert cache.get(keys[0]) is None  # the breaker opens
    cache.invalidate_tags("t")  # missed by the victim: fenced on the peer and the witness
    victim.resume()
    restarted(peer, cache)  # the peer forgets the fence; the witness has it
    assert cache.get_many(keys) == {}
    assert policy_count(cache, "fenced", victim.url) == 1
    assert cache.set(keys[0], "new", tags=["t"]) is False  # quiet: it may have missed a lock
    assert policy_count(cache, "refused", victim.url) == 1


def test_after_one_of_three_restarts__the_other_two_write_at_once_without_a_witness(
    clean_redis_servers, make_cache
):
    """Every fence is on two partitions at least (the next test): the one the
    restarted peer forgot is still on the third, which kept its memory and answers.
    So the healthy partitions keep their entries and take tagged writes at once;
    and every lock the restarted one lost is on one of them, which lend it theirs."""
    first, second, peer = clean_redis_servers[:3]
    cache = partitions([first, second, peer], make_cache, horizon=30)
    keys = [keys_on(cache, s.url, count=1, prefix="kept")[0] for s in (first, second)]
    cache.set_many(dict.fromkeys(keys, "before"), tags=["t"])
    restarted(peer, cache)
    assert tagged_writes(cache, [first, second, peer]) == [(None, "after")] * 3
    assert cache.get_many(keys) == dict.fromkeys(keys, "before")  # nothing to drop
    assert policy_count(cache, "refused") == 0
    cache.invalidate_tags("t")  # and invalidation still reaches what they wrote
    assert cache.get_many(keys) == {}


def test_an_invalidation_only_one_of_three_partitions_took__is_incomplete_without_a_witness(
    clean_redis_servers, make_cache
):
    """Its fences would be on one partition alone: a restart of that one would
    lose them, and the two that missed the invalidation could not know. So it
    fails, as an invalidation that reaches nobody does; two of three will do."""
    from django_tiercache.exceptions import InvalidationIncomplete

    survivor, second, third = clean_redis_servers[:3]
    cache = partitions([survivor, second, third], make_cache, horizon=30, BREAKER_FAILURES=1)
    third.pause()
    cache.invalidate_tags("t")  # fences on the survivor and the second
    second.pause()
    with pytest.raises(InvalidationIncomplete):
        cache.invalidate_tags("t")


def test_a_restarted_partition_holds_the_locks_its_peers_lend__so_fills_stay_refused(
    clean_redis_servers, make_cache
):
    """A model write locked a tag on every partition, then one of them restarted
    and lost the lock: it takes the lock back from its peers, so a fill under the
    locked tag is still refused there until the writer releases it."""
    first, second, peer = clean_redis_servers[:3]
    cache = partitions([first, second, peer], make_cache, horizon=30)
    cache.lock_tags("writer", ["locked"], 30)
    restarted(peer, cache)
    (key,) = keys_on(cache, peer.url, count=1)
    assert cache.set(key, "free", tags=["free"]) is None  # the peer takes tagged writes
    assert cache.set(key, "read before the commit", tags=["locked"]) is False
    assert policy_count(cache, "adopted", peer.url) == 1
    cache.unlock_tags("writer", ["locked"])
    assert cache.set(key, "read after the commit", tags=["locked"]) is None
    assert cache.get(key) == "read after the commit"


def test_a_lock_that_reached_only_the_peers_after_they_lent__is_taken_again_where_it_was_lost(
    clean_redis_servers, make_cache
):
    """The race the copies guard against: a writer's lock landed on a partition,
    which then restarted and copied its peers' locks before the writer's lock
    reached them. The peers' replies say so, and the writer locks the restarted
    partition again before it goes on: a fill there under the tag is refused."""
    first, second, peer = clean_redis_servers[:3]
    cache = partitions([first, second, peer], make_cache, horizon=30)
    fencing, by_url = cache._fencing, {p.name: p for p in cache._partitions}
    lock = (("late",), "writer", 30_000)
    landed_before = by_url[peer.url].run("lock", *lock)  # the restart loses it
    restarted(peer, cache)
    (key,) = keys_on(cache, peer.url, count=1)
    assert cache.set(key, "v", tags=["other"]) is None  # renewed: the peers lent their locks
    late = [by_url[s.url].run("lock", *lock) for s in (first, second)]
    copied = late[0].value[1]  # {id: epoch} of the partitions that copied its locks
    assert copied[by_url[peer.url].id] != landed_before.value[0]  # the epoch after the restart
    fencing._lock_again([landed_before, *late], lock[0], lock[1:])
    assert cache.set(key, "read before the commit", tags=["late"]) is False


def test_a_fence_recorded_on_a_partition_soon_after_it_adopted_locks__makes_it_quiet_again(
    clean_redis_servers, make_cache
):
    """A writer whose lock reached the restarted partition alone, and missed the
    peers, records fences for them there before it commits: nothing told it to
    lock the restarted partition again, so that partition drops what it filled
    since and refuses fills, as a fenced one does."""
    first, second, peer = clean_redis_servers[:3]
    cache = partitions([first, second, peer], make_cache, horizon=30, BREAKER_FAILURES=1)
    restarted(peer, cache)
    (key,) = keys_on(cache, peer.url, count=1)
    assert cache.set(key, "filled", tags=["t"]) is None
    assert cache.get(key) == "filled"  # served from the restarted partition
    assert policy_count(cache, "adopted", peer.url) == 1
    second.pause()
    cache.invalidate_tags("u")  # missed by the second: fences on the first and the peer
    second.resume()
    assert cache.get(key) is None
    assert cache.set(key, "again", tags=["t"]) is False


def test_a_meta_hash_found_on_another_server__makes_fills_wait_the_longest_lock_taken_there(
    clean_redis_servers, make_cache
):
    """A promoted replica holds a copy of its old primary's meta hash, which may lack
    the last write lock the primary took. The first process to greet it may take no
    locks itself (no lock horizon declared: this one) and still must not let a fill
    in before such a lock could have expired: the hash remembers the longest lock a
    writer took there. The locks the copy does hold are kept too."""
    server = clean_redis_servers[0]
    cache = make_cache(server.url, **FAST)
    cache.get("greeting")
    meta = f"{cache.key_prefix}:_tc:meta"
    cache.lock_tags("writer-1", ["kept"], 30)  # a lock the copy holds
    cache.lock_tags("writer-2", ["lost"], 30)  # and one it lacks, as a failover may lose it
    assert cache.set("tagged", "before", tags=["free"]) is None
    assert cache.get("tagged") == "before"
    with server.client() as client:
        client.hdel(meta, f"l:{slot_of('lost')}")  # the lock field of the tag's slot
        client.hset(meta, "run", "the-old-primary")  # a run_id this server never had
    for partition in cache._partitions:
        partition.store.disconnect()  # new connections: the next call greets
    assert cache.get("tagged") is None  # the greeting dropped the tagged entries
    assert policy_count(cache, "error:get") == 0
    assert cache.set("tagged", "read before writer-2 commits", tags=["lost"]) is False
    with server.client() as client:
        assert client.hget(meta, f"l:{slot_of('kept')}").decode().endswith(" writer-1")


def test_a_meta_hash_found_on_another_server_while_quiet__stays_quiet_whoever_greets_it(
    clean_redis_servers, make_cache, monkeypatch
):
    """A partition lost its memory (the meta hash) while a writer's lock was held;
    a process that knows the lock horizon met the loss first, so the partition is
    quiet. Then its hash shows up on another server (a failover, a moved slot)
    before the quiet period is over. The first process to greet it there takes no
    locks (no lock horizon), and the hash holds no lock nor 'h' (both were lost
    with the old hash): the quiet period it was in is all that still says a lock
    may be held, and must not be dropped."""
    from django_tiercache.storage import hooks

    server = clean_redis_servers[0]
    cache = make_cache(server.url, **FAST)
    cache.get("greeting")
    ns = f"{cache.key_prefix}:_tc:"
    meta = f"{ns}meta"
    monkeypatch.setitem(hooks._lock_horizons, ns, 30_000)  # a writer's process
    cache.lock_tags("writer-1", ["product"], 30)
    with server.client() as client:
        client.delete(meta)  # lost, with writer-1's lock
    assert cache.set("product:1", "read before the commit", tags=["product"]) is False
    monkeypatch.delitem(hooks._lock_horizons, ns)  # from here on, a reader's process
    with server.client() as client:
        client.hset(meta, "run", "the-old-primary")  # found on another server now
    for partition in cache._partitions:
        partition.store.disconnect()  # new connections: the next call greets
    assert cache.get("product:1") is None
    assert cache.set("product:1", "read before the commit", tags=["product"]) is False


def test_a_partition_fenced_for_a_missed_lock__is_quiet_even_if_renewed_by_a_process_without_locks(
    clean_redis_servers, make_cache, monkeypatch
):
    """A writer's lock misses a partition (it does not answer): the lock is fenced
    on the others. The fenced partition's next lease drops its tagged entries and
    must refuse fills until the missed lock could have expired. That renewal is
    made by whichever process reads there first, which may take no locks itself
    (no lock horizon): the partition still knows how long its writers' locks
    last, since they have locked it before."""
    from django_tiercache.storage import hooks

    first, second, third = clean_redis_servers[:3]
    cache, ns = locked_before([first, second, third], make_cache, monkeypatch, "product")
    (key,) = keys_on(cache, second.url, count=1)
    assert cache.set(key, "filled", tags=["other"]) is None
    with second.client() as client:
        client.execute_command("CLIENT", "PAUSE", 2000, "WRITE")  # it takes no lock
        cache.lock_tags("writer-1", ["product"], 30)  # missed by the second: fenced
        client.execute_command("CLIENT", "UNPAUSE")
    time.sleep(FAST["BREAKER_COOLDOWN"] + 0.1)
    monkeypatch.delitem(hooks._lock_horizons, ns)  # from here on, a reader's process
    assert cache.get(key) is None  # renews the second's lease: fenced
    assert policy_count(cache, "fenced", second.url) == 1
    assert cache.set(key, "read before the commit", tags=["product"]) is False


def test_locks_lent_to_a_restarted_partition__are_copied_as_long_as_its_writers_lock_whoever_renews(
    clean_redis_servers, make_cache, monkeypatch
):
    """The copies race again (see above), with the restarted partition's lease renewed
    by a process that takes no locks (no lock horizon): the peers must still note
    the copy for as long as the partition's writers lock, or a lock reaching them
    after they lent tells its writer nothing."""
    from django_tiercache.storage import hooks

    first, second, peer = clean_redis_servers[:3]
    cache, ns = locked_before([first, second, peer], make_cache, monkeypatch, "late")
    fencing, by_url = cache._fencing, {p.name: p for p in cache._partitions}
    lock = (("late",), "writer", 30_000)
    landed_before = by_url[peer.url].run("lock", *lock)  # the restart loses it
    restarted(peer, cache)
    (key,) = keys_on(cache, peer.url, count=1)
    assert cache.get(key) is None  # the writer's process greets it: quiet
    monkeypatch.delitem(hooks._lock_horizons, ns)  # from here on, a reader's process
    assert cache.set(key, "v", tags=["other"]) is None  # renewed: the peers lent their locks
    assert policy_count(cache, "adopted", peer.url) == 1
    late = [by_url[s.url].run("lock", *lock) for s in (first, second)]
    fencing._lock_again([landed_before, *late], lock[0], lock[1:])
    assert cache.set(key, "read before the commit", tags=["late"]) is False
