"""django-redis' hash, set and sorted-set commands on every kind of partition.

Real Redis servers (one, four partitions, a Cluster, a Sentinel-managed primary)
and memory://, through the any_cache fixture. Multi-key commands are tried with
keys on one partition (one Redis command) and spread over several (combined by
the cache).
"""

from __future__ import annotations

import logging
import pickle
import time
import uuid
from enum import IntEnum

import pytest
import redis

from django_tiercache.structures import MEMBER_CONTEXT
from tests.redis_servers import SHARED_REDIS_URL
from tests.test_l1 import L1, read_into_l1, wait_live


class Size(IntEnum):
    SMALL = 1
    LARGE = 2


def keys_on_distinct_partitions(cache, count=3, prefix="set"):
    """`count` keys that map to different partitions where there are that many."""
    chosen, seen = [], set()
    for i in range(500):
        key = f"{prefix}:{i}"
        partition = cache.partition_for(key)
        if partition not in seen or len(seen) >= len(cache._partitions):
            seen.add(partition)
            chosen.append(key)
        if len(chosen) == count:
            return chosen
    raise AssertionError("no keys found")


def keys_on_one_partition(cache, count=3):
    first = "one:0"
    same = [
        k
        for k in (f"one:{i}" for i in range(500))
        if cache.partition_for(k) == cache.partition_for(first)
    ]
    return same[:count]


# -- hashes --


def test_hash__fields_values_and_versions(any_cache):
    assert any_cache.hset("user:1", "name", "Ada") == 1
    assert any_cache.hset("user:1", mapping={"name": "Ada L.", "age": 36, "tags": ["x"]}) == 2
    assert any_cache.hlen("user:1") == 3
    assert sorted(any_cache.hkeys("user:1")) == ["age", "name", "tags"]
    assert any_cache.hexists("user:1", "age") is True
    assert any_cache.hget("user:1", "name") == "Ada L."
    assert any_cache.hget("user:1", "missing", default="-") == "-"
    assert any_cache.hgetall("user:1") == {"name": "Ada L.", "age": 36, "tags": ["x"]}
    assert any_cache.hdel("user:1", "age") == 1
    assert any_cache.hexists("user:1", "age") is False
    any_cache.hset("user:1", "name", "other version", version=2)
    assert any_cache.hget("user:1", "name") == "Ada L."
    assert any_cache.hlen("user:1", version=2) == 1
    assert any_cache.hlen("never") == 0
    assert any_cache.hgetall("never") == {}


# -- sets, one key --


def test_set__members_of_any_type_round_trip(any_cache):
    members = ["a", 7, frozenset({"k"}), (1, 2), Size.LARGE, True, 2**70]
    assert any_cache.sadd("s", *members) == len(members)
    assert any_cache.sadd("s", "a", "b") == 1
    assert any_cache.scard("s") == len(members) + 1
    found = any_cache.smembers("s")
    assert "a" in found and 7 in found and (1, 2) in found and 2**70 in found
    assert any_cache.sismember("s", frozenset({"k"})) is True
    assert any_cache.sismember("s", "zzz") is False
    assert any_cache.smismember("s", "a", "zzz", 7) == [True, False, True]
    assert any_cache.srem("s", "a", "zzz") == 1
    assert "a" not in any_cache.smembers("s")
    assert any_cache.smembers("never") == set()


def test_set__pop_random_and_scan(any_cache):
    any_cache.sadd("s", "bar1", "bar2", "zoo")
    assert any_cache.srandmember("s") in {"bar1", "bar2", "zoo"}
    assert len(any_cache.srandmember("s", 2)) == 2
    assert any_cache.sscan("s") == {"bar1", "bar2", "zoo"}
    assert any_cache.sscan("s", match="bar*") == {"bar1", "bar2"}
    assert set(any_cache.sscan_iter("s", match="z*")) == {"zoo"}
    popped = any_cache.spop("s")
    assert popped in {"bar1", "bar2", "zoo"}
    assert any_cache.spop("s", 2) == {"bar1", "bar2", "zoo"} - {popped}
    assert any_cache.spop("s") is None
    assert any_cache.smembers("s") == set()


def test_set__sscan_iter_walks_a_large_set_batch_after_batch(any_cache):
    any_cache.sadd("big", *range(1000))
    assert sorted(any_cache.sscan_iter("big", count=50)) == list(range(1000))


# -- sets, several keys (on one partition or spread) --


@pytest.mark.parametrize("spread", [False, True], ids=["one-partition", "spread"])
def test_set_algebra__same_answers_whether_keys_share_a_partition_or_not(any_cache, spread):
    pick = keys_on_distinct_partitions if spread else keys_on_one_partition
    a, b, dest = pick(any_cache)
    any_cache.sadd(a, 1, 2, 3)
    any_cache.sadd(b, 3, 4)
    assert any_cache.sdiff(a, b) == {1, 2}
    assert any_cache.sinter(a, b) == {3}
    assert any_cache.sunion(a, b) == {1, 2, 3, 4}
    assert any_cache.sdiffstore(dest, a, b) == 2
    assert any_cache.smembers(dest) == {1, 2}
    assert any_cache.sinterstore(dest, a, b) == 1
    assert any_cache.smembers(dest) == {3}
    assert any_cache.sunionstore(dest, a, b) == 4
    assert any_cache.smembers(dest) == {1, 2, 3, 4}
    assert any_cache.sunionstore(dest, dest, a) == 4  # a destination among its sources
    assert any_cache.smove(a, b, 1) is True
    assert any_cache.smove(a, b, 99) is False
    assert any_cache.smembers(a) == {2, 3}
    assert any_cache.smembers(b) == {1, 3, 4}
    assert any_cache.sdiffstore(dest, "never", a) == 0
    assert any_cache.smembers(dest) == set()


def test_set_algebra__spread_over_partitions__really_spans_them(make_cache, clean_redis_servers):
    cache = make_cache([s.url for s in clean_redis_servers])
    keys = keys_on_distinct_partitions(cache)
    assert len({cache.partition_for(k) for k in keys}) == 3
    cache.sadd(keys[0], "x", "y")
    cache.sadd(keys[1], "y")
    assert cache.sunionstore(keys[2], keys[0], keys[1]) == 2
    holder = cache._partition(cache.make_key(keys[2])).store.client
    assert holder.scard(cache.make_key(keys[2])) == 2  # written on the destination's partition


def test_sdiffstore__versions_of_destination_and_sources(any_cache):
    any_cache.sadd("a", 1, 2, version=2)
    any_cache.sadd("b", 2, version=2)
    assert any_cache.sdiffstore("d", "a", "b", version_keys=2) == 1
    assert any_cache.smembers("d") == {1}
    assert any_cache.sdiffstore("d", "a", "b", version_dest=3, version_keys=2) == 1
    assert any_cache.smembers("d", version=3) == {1}


# -- sorted sets --


def test_sorted_set__scores_ranges_and_pops(any_cache):
    assert any_cache.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4}) == 4
    assert any_cache.zadd("z", {"a": 10}, xx=True, ch=True) == 1
    assert any_cache.zadd("z", {"e": 1}, xx=True) == 0
    assert any_cache.zadd("z", {"b": 1}, incr=True) == 3.0
    assert any_cache.zcard("z") == 4
    assert any_cache.zscore("z", "a") == 10.0
    assert any_cache.zscore("z", "nope") is None
    assert any_cache.zincrby("z", 0.5, "c") == 3.5
    assert any_cache.zrange("z", 0, -1) == ["b", "c", "d", "a"]
    assert any_cache.zrange("z", 0, 1, withscores=True) == [("b", 3.0), ("c", 3.5)]
    assert any_cache.zrevrange("z", 0, 0) == ["a"]
    assert any_cache.zrangebyscore("z", "(3", 10) == ["c", "d", "a"]
    assert any_cache.zrangebyscore("z", "-inf", "+inf", start=1, num=2) == ["c", "d"]
    assert any_cache.zrevrangebyscore("z", 4, 3, withscores=True) == [
        ("d", 4.0),
        ("c", 3.5),
        ("b", 3.0),
    ]
    assert any_cache.zcount("z", 3, "(4") == 2
    assert any_cache.zrank("z", "d") == 2
    assert any_cache.zrank("z", "nope") is None
    assert any_cache.zpopmax("z") == ("a", 10.0)
    assert any_cache.zpopmin("z", 2) == [("b", 3.0), ("c", 3.5)]
    assert any_cache.zremrangebyscore("z", 0, 100) == 1
    assert any_cache.zrem("z", "d") == 0
    assert any_cache.zpopmax("z") is None
    assert any_cache.zpopmin("z", 3) == []


# -- keys that hold structures, and the rest of the API --


def test_a_structure__expires_persists_and_is_deleted_like_an_entry(any_cache):
    any_cache.sadd("s", 1)
    assert any_cache.ttl("s") is None
    assert any_cache.expire("s", 100) is True
    assert 99 <= any_cache.ttl("s") <= 100
    assert any_cache.persist("s") is True
    assert any_cache.ttl("s") is None
    assert any_cache.touch("s", 50) is True
    assert 0 < any_cache.pttl("s") <= 50_000
    assert any_cache.get("s") is None  # not an entry
    assert any_cache.delete("s") is True
    assert any_cache.scard("s") == 0
    any_cache.hset("h", "f", 1)
    assert any_cache.expire("h", 0) is True
    assert any_cache.hlen("h") == 0
    any_cache.zadd("z", {"m": 1})
    assert any_cache.delete_pattern("z*") == 1
    assert any_cache.zcard("z") == 0


def test_a_structure_command_on_an_entry__raises_wrongtype_and_changes_nothing(any_cache):
    any_cache.set("k", "value")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        any_cache.sadd("k", 1)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        any_cache.hset("k", "f", 1)
    assert any_cache.get("k") == "value"


def test_a_member_this_application_did_not_sign__is_never_unpickled(make_cache):
    cache = make_cache(SHARED_REDIS_URL)
    cache.sadd("s", "good")
    ran = []

    class Planted:
        def __reduce__(self):
            return (ran.append, ("unpickled",))

    raw = redis.Redis.from_url(SHARED_REDIS_URL)
    raw.sadd(cache.make_key("s"), pickle.dumps(Planted()), b"v" + b"\0" * 16 + pickle.dumps(1))
    raw.hset(cache.make_key("h"), "f", pickle.dumps(Planted()))
    assert cache.smembers("s") == {"good"}
    assert cache.hget("h", "f") is None
    assert ran == []
    assert cache._policy.counts[("tampered", "-")] >= 3


def test_members__are_signed_not_bound_to_their_key(make_cache):
    cache = make_cache(SHARED_REDIS_URL)
    encoded = cache.client.encode({"a": 1})
    assert encoded[:1] == b"v" and cache.client.decode(encoded) == {"a": 1}
    assert cache._codec.encode(MEMBER_CONTEXT, 5) == b"5"  # integers stay digits


def test_an_unreachable_partition__answers_none_or_raises_with_raise_errors(
    make_cache, closed_port_url, caplog
):
    quiet = make_cache(closed_port_url)
    with caplog.at_level(logging.WARNING, logger="django_tiercache"):
        assert quiet.sadd("s", 1) is None
        assert quiet.smembers("s") is None
        assert quiet.hgetall("h") is None
        assert list(quiet.sscan_iter("s")) == []
    assert "sadd" in caplog.text
    loud = make_cache(closed_port_url, RAISE_ERRORS=True)
    with pytest.raises(redis.ConnectionError):
        loud.zadd("z", {"m": 1})


# -- cache.client --


def test_client__get_client_gives_the_partition_of_a_key(make_cache, clean_redis_servers):
    cache = make_cache([s.url for s in clean_redis_servers])
    cache.hset("user:1000", "email", "ada@example.com")
    made = cache.client.make_key("user:1000")
    own = cache.client.get_client(key=made)
    assert own.type(made) == b"hash"
    router = cache.client.get_client(write=False)
    assert router.exists(made) == 1
    assert router.hkeys(made) == [b"email"]
    with pytest.raises(TypeError, match="no key to route by"):
        router.ping()


def test_client__on_one_partition_is_its_redis_client_and_on_memory_has_none(make_cache):
    cache = make_cache(SHARED_REDIS_URL)
    client = cache.client.get_client()
    assert isinstance(client, redis.Redis) and client.ping()
    assert cache.client.get_client_with_index() == (client, 0)
    with pytest.raises(TypeError, match="in-process"):
        make_cache("memory://structures").client.get_client()


def test_valkey_scheme__is_read_as_the_redis_one(make_cache):
    cache = make_cache(SHARED_REDIS_URL.replace("redis://", "valkey://"))
    cache.set("k", 1)
    cache.sadd("s", 1)
    assert cache.get("k") == 1 and cache.smembers("s") == {1}
    assert cache._partitions[0].url.startswith("redis://")


# -- locks, scans and connections, as django-redis users expect them --


def test_a_held_lock__is_a_key_has_key_sees_until_released(any_cache):
    lock = any_cache.lock("job")
    assert lock.acquire(blocking=False)
    assert any_cache.has_key("job")
    assert any_cache.get("job").startswith("lock:")
    lock.release()
    assert not any_cache.has_key("job")


def test_a_released_lock__leaves_no_l1_copy(make_cache):
    cache = make_cache(SHARED_REDIS_URL, L1=L1)
    wait_live(cache)
    lock = cache.lock("job")
    assert lock.acquire(blocking=False)
    assert read_into_l1(cache, "job").startswith("lock:")
    lock.release()
    assert cache.get("job") is None


def test_scan_itersize__follows_django_redis_setting(make_cache, redis_servers, settings):
    server = redis_servers[0]
    server.ensure_clean()
    cache = make_cache(server.url)
    for i in range(100):
        cache.set(f"k{i}", i)
    stats = server.client()

    def scans(**kwargs):
        stats.config_resetstat()
        found = len(cache.keys("k*", **kwargs))
        assert found == 100
        return int(stats.info("commandstats")["cmdstat_scan"]["calls"])

    settings.DJANGO_REDIS_SCAN_ITERSIZE = 1000
    few = scans()
    settings.DJANGO_REDIS_SCAN_ITERSIZE = 5
    many = scans()
    assert few <= 2 and many >= 6  # Valkey's SCAN may give more than COUNT keys a call


@pytest.mark.parametrize("close_connection", [False, True])
def test_close_connection__closes_the_pools_idle_connections(
    make_cache, redis_servers, settings, close_connection
):
    server = redis_servers[1]
    server.ensure_clean()
    settings.DJANGO_REDIS_CLOSE_CONNECTION = close_connection
    # A pool of its own (pools are shared per server and options, as django-redis'
    # are): another cache in this process may take or hold a shared pool's
    # connections meanwhile, and an earlier test may have left one idle to a
    # server since restarted on this port.
    own = {"client_name": f"close-{uuid.uuid4().hex[:8]}"}
    cache = make_cache(server.url, CONNECTION_POOL_KWARGS=own)
    cache.get("k")
    cache.sadd("s", 1)
    probe = server.client()
    pool = cache._partitions[0].store.pool
    # This cache's sockets, by their local ports: other tests' background threads
    # (L1 subscribers, heartbeats) may connect to the same server meanwhile.
    ours = {c._sock.getsockname()[1] for c in pool._available_connections if c._sock}
    assert ours

    def still_open() -> set[int]:
        return ours & {int(c["addr"].rsplit(":", 1)[1]) for c in probe.client_list()}

    assert still_open() == ours
    cache.close()
    if close_connection:
        # The server forgets a socket its client closed on a later turn of its event
        # loop, which a loaded machine may delay: CLIENT LIST may still show it.
        deadline = time.monotonic() + 5
        while still_open() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert still_open() == set()
    else:
        assert still_open() == ours
