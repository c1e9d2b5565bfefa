"""django-redis' cache methods on TierCache, on every kind of partition.

The same behaviours django-redis' own tests check for its public API (time to
live, expiry, nx, pattern deletes, key listing, locks, incr without the key
check), run against memory://, one Redis server and four partitions.
"""

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError

from django_tiercache.redis_compat import redis_glob_to_regex
from tests import redis_servers as servers_module

FAST = {"SOCKET_TIMEOUT": 0.3, "SOCKET_CONNECT_TIMEOUT": 0.3, "BREAKER_COOLDOWN": 0.5}


def spread(cache, prefix, count=24):
    """`count` keys "prefix:i" set to i; on four partitions they land on several."""
    keys = [f"{prefix}:{i}" for i in range(count)]
    cache.set_many({k: i for i, k in enumerate(keys)})
    return keys


def partitions_of(cache, keys):
    return {cache.partition_for(k) for k in keys}


# -- ttl and pttl --


def test_ttl__none_for_no_expiry_zero_for_a_missing_key(any_cache):
    any_cache.set("forever", 1, timeout=None)
    assert any_cache.ttl("forever") is None
    assert any_cache.pttl("forever") is None
    assert any_cache.ttl("missing") == 0
    assert any_cache.pttl("missing") == 0


def test_ttl__seconds_and_milliseconds_left(any_cache):
    any_cache.set("key", 1, timeout=100)
    assert 0 < any_cache.ttl("key") <= 100
    assert 0 < any_cache.pttl("key") <= 100_000


def test_ttl__follows_key_prefix_and_version(any_cache):
    any_cache.set("key", 1, timeout=100, version=2)
    assert any_cache.ttl("key") == 0
    assert 0 < any_cache.ttl("key", version=2) <= 100


def test_ttl__an_entry_whose_tag_was_invalidated_is_missing(any_cache):
    any_cache.set("tagged", 1, timeout=100, tags=["t"])
    assert 0 < any_cache.ttl("tagged") <= 100
    any_cache.invalidate_tags("t")
    assert any_cache.ttl("tagged") == 0
    assert any_cache.expire("tagged", 50) is False


# -- expire, pexpire, expire_at, pexpire_at, persist --


def test_expire__sets_the_time_left_and_says_whether_the_key_exists(any_cache):
    any_cache.set("key", 1, timeout=None)
    assert any_cache.expire("key", 50) is True
    assert 0 < any_cache.ttl("key") <= 50
    assert any_cache.expire("key", timedelta(seconds=20)) is True
    assert 0 < any_cache.ttl("key") <= 20
    assert any_cache.expire("missing", 50) is False
    assert any_cache.get("missing") is None


def test_expire__zero_or_less_deletes(any_cache):
    any_cache.set_many({"a": 1, "b": 2})
    assert any_cache.expire("a", 0) is True
    assert any_cache.expire("b", -5) is True
    assert any_cache.get_many(["a", "b"]) == {}


def test_pexpire__milliseconds(any_cache):
    any_cache.set("key", 1, timeout=None)
    assert any_cache.pexpire("key", 5_000) is True
    assert 0 < any_cache.pttl("key") <= 5_000
    assert any_cache.ttl("key") <= 5


def test_expire_at__a_datetime_or_unix_seconds(any_cache):
    any_cache.set_many({"a": 1, "b": 2}, timeout=None)
    assert any_cache.expire_at("a", datetime.now(timezone.utc) + timedelta(seconds=100))
    assert 0 < any_cache.ttl("a") <= 100
    assert any_cache.expire_at("b", int(time.time()) + 200)
    assert 100 < any_cache.ttl("b") <= 200
    assert any_cache.expire_at("missing", int(time.time()) + 200) is False


def test_expire_at__a_moment_in_the_past_deletes(any_cache):
    any_cache.set("key", 1, timeout=None)
    assert any_cache.expire_at("key", datetime.now(timezone.utc) - timedelta(seconds=5))
    assert any_cache.get("key") is None


def test_pexpire_at__unix_milliseconds(any_cache):
    any_cache.set("key", 1, timeout=None)
    assert any_cache.pexpire_at("key", int(time.time() * 1000) + 30_000) is True
    assert 0 < any_cache.pttl("key") <= 30_000


def test_persist__removes_the_expiry_once(any_cache):
    any_cache.set("key", 1, timeout=100)
    assert any_cache.persist("key") is True
    assert any_cache.ttl("key") is None
    assert any_cache.persist("key") is False  # no expiry left to remove
    assert any_cache.persist("missing") is False
    assert any_cache.get("key") == 1


def test_expire__a_tagged_entry_stays_valid_for_its_new_time(any_cache):
    any_cache.set("tagged", "v", timeout=10, tags=["shop.product:7"])
    assert any_cache.expire("tagged", 1000) is True
    assert any_cache.persist("tagged") is True
    assert any_cache.get("tagged") == "v"
    any_cache.invalidate_tags("shop.product:7")
    assert any_cache.get("tagged") is None


# -- set(nx=True), incr(ignore_key_check=True), delete_many --


def test_set_nx__stores_only_a_missing_key_and_says_so(any_cache):
    assert any_cache.set("key", 1, nx=True) is True
    assert any_cache.set("key", 2, nx=True) is False
    assert any_cache.get("key") == 1
    assert any_cache.set("key", 3) is None  # Django's set() returns nothing
    assert any_cache.get("key") == 3


def test_incr_ignore_key_check__a_missing_key_starts_at_delta_and_never_expires(any_cache):
    with pytest.raises(ValueError, match="not found"):
        any_cache.incr("counter")
    assert any_cache.incr("counter", 5, ignore_key_check=True) == 5
    assert any_cache.ttl("counter") is None
    assert any_cache.incr("counter", 2, ignore_key_check=True) == 7
    assert any_cache.get("counter") == 7


def test_delete_many__returns_how_many_existed_as_django_redis_does(any_cache):
    keys = spread(any_cache, "gone")
    any_cache.set("kept", 1)
    assert any_cache.delete_many([*keys, "never-set"]) == len(keys)
    assert any_cache.delete_many(keys) == 0
    assert any_cache.delete_many([]) == 0
    assert any_cache.get_many([*keys, "kept"]) == {"kept": 1}


# -- delete_pattern, iter_keys, keys --


def test_delete_pattern__deletes_matching_keys_on_every_partition(any_cache):
    users = spread(any_cache, "user")
    orders = spread(any_cache, "order")
    if len(any_cache._partitions) > 1:
        assert len(partitions_of(any_cache, users)) > 1
    assert any_cache.delete_pattern("user:*", itersize=5) == len(users)
    assert any_cache.get_many(users) == {}
    assert len(any_cache.get_many(orders)) == len(orders)
    assert any_cache.delete_pattern("user:*") == 0


def test_delete_pattern__spares_other_versions_and_prefixes(any_location, make_cache):
    cache = make_cache(any_location)
    other = make_cache(any_location, KEY_PREFIX=f"other-{uuid.uuid4().hex[:6]}")
    cache.set("user:1", 1)
    cache.set("user:1", 2, version=2)
    other.set("user:1", 3)
    assert cache.delete_pattern("user:*") == 1
    assert cache.get("user:1", version=2) == 2
    assert other.get("user:1") == 3
    assert cache.delete_pattern("user:*", version=2) == 1


def test_iter_keys__yields_the_callers_keys_from_every_partition(any_cache):
    users = spread(any_cache, "user")
    spread(any_cache, "order", 3)
    found = any_cache.iter_keys("user:*", itersize=2)
    assert iter(found) is found  # a generator, not a list
    assert sorted(found) == sorted(users)
    assert sorted(any_cache.keys("user:*")) == sorted(users)
    assert any_cache.keys("nothing:*") == []


def test_keys__follow_the_version(any_cache):
    any_cache.set("a", 1)
    any_cache.set("b", 1, version=3)
    assert any_cache.keys("*") == ["a"]
    assert any_cache.keys("*", version=3) == ["b"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a?c", ["a*c", "abc", "axc"]),
        ("a[bx]c", ["abc", "axc"]),
        ("a[^b]c", ["a*c", "axc"]),
        ("a[a-c]c", ["abc"]),
        (r"a\*c", ["a*c"]),
        ("a*", ["a*c", "abc", "axc"]),
    ],
)
def test_keys__redis_glob_patterns_mean_the_same_on_every_partition_kind(
    any_cache, pattern, expected
):
    any_cache.set_many({"abc": 1, "axc": 2, "a*c": 3, "zzz": 4})
    assert sorted(any_cache.keys(pattern)) == expected


def test_redis_glob_to_regex__quotes_regex_characters():
    assert redis_glob_to_regex("a.b+(c)") == r"a\.b\+\(c\)"
    assert redis_glob_to_regex("[]") == r"\[\]"


# -- lock --


def test_lock__excludes_a_second_holder_until_released(any_cache):
    first = any_cache.lock("job", timeout=30)
    second = any_cache.lock("job", timeout=30)
    assert first.acquire(blocking=False) is True
    assert second.acquire(blocking=False) is False
    assert second.acquire(blocking_timeout=0.2) is False
    first.release()
    assert second.acquire(blocking=False) is True
    second.release()


def test_lock__context_manager_and_release_twice_raises(any_cache):
    lock = any_cache.lock("job", timeout=30)
    with lock:
        assert lock.locked()
        assert lock.owned()
    assert not lock.locked()
    with pytest.raises(LockError):
        lock.release()


def test_lock__lives_on_the_partition_of_its_key(any_location, make_cache):
    if isinstance(any_location, str) and any_location.startswith("memory://"):
        pytest.skip("a memory:// lock is in-process; tested above")
    cache = make_cache(any_location)
    keys = [f"job:{i}" for i in range(12)]
    locks = [cache.lock(key, timeout=30) for key in keys]
    for lock in locks:
        assert lock.acquire(blocking=False)
    try:
        for key in keys:
            url = cache.partition_for(key)
            store = cache._partition(cache.make_key(key)).store
            if url.startswith(("redis+cluster://", "redis+sentinel://")):
                # redis-py's RedisCluster routes it; Sentinel names the primary.
                client = store.client
            else:
                client = redis.Redis.from_url(url)
            # A cluster slot group keeps the lock beside its entries, under its hashtag.
            assert client.exists(store.stored_key(cache.make_key(key))) == 1
        if isinstance(any_location, list):
            assert len(partitions_of(cache, keys)) > 1
    finally:
        for lock in locks:
            lock.release()


def test_lock__in_memory_is_an_expiring_in_process_lock(make_cache):
    cache = make_cache(f"memory://lock-{uuid.uuid4().hex}")
    lock = cache.lock("job", timeout=0.05)
    assert lock.acquire()
    deadline = time.monotonic() + 5
    while lock.locked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not lock.locked()  # expired: another caller may take it
    assert cache.lock("job").acquire(blocking=False)


# -- failures --


def test_a_dead_partition__is_skipped_by_pattern_calls(
    clean_redis_servers, closed_port_url, make_cache
):
    cache = make_cache([clean_redis_servers[0].url, closed_port_url], **FAST)
    live = [
        k for k in (f"user:{i}" for i in range(30)) if cache.partition_for(k) != closed_port_url
    ]
    cache.set_many(dict.fromkeys(live, 1))
    assert sorted(cache.keys("user:*")) == sorted(live)
    assert cache.delete_pattern("user:*") == len(live)
    assert (
        cache.ttl(
            next(
                k for k in (f"k{i}" for i in range(50)) if cache.partition_for(k) == closed_port_url
            )
        )
        == 0
    )


def test_a_dead_partition__raises_with_raise_errors(closed_port_url, make_cache):
    cache = make_cache([closed_port_url], RAISE_ERRORS=True, **FAST)
    with pytest.raises(RedisConnectionError):
        cache.keys("*")
    with pytest.raises(RedisConnectionError):
        cache.delete_pattern("*")
    with pytest.raises(RedisConnectionError):
        cache.ttl("key")


def test_keys_and_delete_pattern__answer_on_their_first_call_after_a_restart(make_cache, tmp_path):
    """A server restarted without the Functions fails the greeting sent with the first
    call (which loads them); a SCAN only reads, so it is sent again rather than failed."""
    server = servers_module.RedisServer(servers_module.free_port(), tmp_path / "restarted")
    servers_module.start_on_a_free_port(server)
    try:
        cache = make_cache(server.url)
        cache.set("before", 1)  # greeted, the Functions loaded
        server.stop()
        server.start()  # empty: no Functions
        server.client().set(cache.make_key("planted"), b"raw")  # a plain client: no greeting
        assert cache.keys("*") == ["planted"]
        server.client().function_flush()
        cache._partitions[0].store.disconnect()  # the next call greets again
        assert cache.delete_pattern("*") == 1
    finally:
        server.stop()
