"""When Redis fails: misses and skipped writes, the breaker, raising, and fences."""

import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from django_tiercache.exceptions import InvalidationIncomplete, PartitionUnavailable
from django_tiercache.storage.failures import ErrorPolicy
from django_tiercache.storage.stores.slots import bucket_field, bucket_key

FAST = {"SOCKET_TIMEOUT": 0.3, "SOCKET_CONNECT_TIMEOUT": 0.3, "BREAKER_COOLDOWN": 0.5}


def keys_on(cache, name, count=10, prefix="k"):
    """`count` keys that the cache routes to the partition called `name`."""
    found = []
    i = 0
    while len(found) < count:
        key = f"{prefix}{i}"
        if cache.partition_for(key) == name:
            found.append(key)
        i += 1
    return found


def policy_count(cache, event, partition=None):
    return sum(
        n
        for (e, p), n in cache._policy.counts.items()
        if e == event and (partition is None or p == partition)
    )


def test_a_closed_port_partition__misses_and_skips_while_the_other_serves(
    clean_redis_servers, closed_port_url, make_cache, caplog
):
    live = clean_redis_servers[0].url
    cache = make_cache([closed_port_url, live], **FAST)
    dead_keys, live_keys = keys_on(cache, closed_port_url), keys_on(cache, live)
    with caplog.at_level(logging.WARNING, logger="django_tiercache"):
        for key in dead_keys + live_keys:
            cache.set(key, key)
        assert cache.get_many(dead_keys + live_keys) == {k: k for k in live_keys}
        assert cache.get(dead_keys[0], "default") == "default"
        assert cache.add(dead_keys[0], 1) is False
        assert cache.set_many({dead_keys[1]: 1, live_keys[0]: 2}) == [dead_keys[1]]
    assert cache.get(live_keys[0]) == 2
    assert policy_count(cache, "error:set") >= 1
    assert policy_count(cache, "error:get") >= 1
    # Logged once per burst and kind, not once per failed call.
    assert 1 <= len(caplog.records) <= 6


def test_raise_errors__makes_failures_raise(closed_port_url, make_cache):
    cache = make_cache([closed_port_url], RAISE_ERRORS=True, **FAST)
    with pytest.raises(RedisConnectionError):
        cache.get("k")
    with pytest.raises(RedisConnectionError):
        cache.set("k", 1)


def test_the_breaker__stops_calling_a_dead_partition_until_the_cooldown(
    closed_port_url, make_cache
):
    cache = make_cache([closed_port_url], RAISE_ERRORS=True, BREAKER_FAILURES=2, **FAST)
    for _ in range(2):
        with pytest.raises(RedisConnectionError) as tried:
            cache.get("k")
        assert not isinstance(tried.value, PartitionUnavailable)
    with pytest.raises(PartitionUnavailable):
        cache.get("k")
    time.sleep(FAST["BREAKER_COOLDOWN"] + 0.1)
    with pytest.raises(RedisConnectionError) as tried:
        cache.get("k")  # one call is let through after the cooldown
    assert not isinstance(tried.value, PartitionUnavailable)


def test_an_open_breaker__costs_a_request_no_timeout(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url], SOCKET_TIMEOUT=1.0, BREAKER_COOLDOWN=30.0)
    cache.set("k", 1)
    server.pause()
    assert cache.get("k") is None  # one timeout opens the breaker
    started = time.monotonic()
    for _ in range(20):
        assert cache.get("k") is None
    assert time.monotonic() - started < 1.0  # 20 calls, none waited for the 1 s timeout


def test_a_partition_stopped_mid_test_and_brought_back(clean_redis_servers, make_cache):
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(urls, **FAST)
    victim = clean_redis_servers[1]
    victim_keys = keys_on(cache, victim.url)
    other_keys = keys_on(cache, urls[0])
    cache.set_many({k: k for k in victim_keys + other_keys})
    victim.stop()
    assert cache.get_many(victim_keys + other_keys) == {k: k for k in other_keys}
    cache.set(victim_keys[0], "while down")  # skipped, no exception
    victim.start()
    time.sleep(FAST["BREAKER_COOLDOWN"] + 0.1)
    assert cache.get(victim_keys[0]) is None  # it restarted empty
    cache.set(victim_keys[0], "after")
    assert cache.get(victim_keys[0]) == "after"


def test_a_paused_partition__does_not_serve_entries_invalidated_while_it_was_away(
    clean_redis_servers, make_cache
):
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(urls, TAG_LEASE=1.0, **FAST)
    keys = [f"k{i}" for i in range(80)]
    cache.set_many({k: k for k in keys}, tags=["product:1"])
    assert len(cache.get_many(keys)) == 80  # leases granted on every partition
    victim = clean_redis_servers[2]
    victim_keys = [k for k in keys if cache.partition_for(k) == victim.url]
    victim.pause()
    started = time.monotonic()
    cache.invalidate_tags("product:1")
    assert time.monotonic() - started < 3.0
    victim.resume()
    time.sleep(FAST["BREAKER_COOLDOWN"] + 0.1)
    assert cache.get_many(keys) == {}
    other_process = make_cache(urls, TAG_LEASE=1.0, **FAST)
    assert other_process.get_many(victim_keys) == {}


def test_a_partition_the_invalidation_never_reached__is_fenced_when_it_returns(
    clean_redis_servers, make_cache
):
    """Nothing is even sent to the paused server (its breaker is open), so only the
    fence recorded on the other partitions can keep its stale entries from being served."""
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(urls, TAG_LEASE=1.0, BREAKER_FAILURES=1, **FAST)
    victim = clean_redis_servers[3]
    victim_keys = keys_on(cache, victim.url, count=5)
    other_keys = keys_on(cache, urls[0], count=5)
    cache.set_many({k: "old" for k in victim_keys + other_keys}, tags=["user:7"])
    cache.set("untagged", "kept")
    assert len(cache.get_many(victim_keys + other_keys)) == 10
    victim.pause()
    assert cache.get(victim_keys[0]) is None  # times out: the breaker opens
    cache.invalidate_tags("user:7")
    victim.resume()
    bucket = bucket_key(f"{cache.key_prefix}:_tc:", "user:7")
    assert victim.client().hexists(bucket, bucket_field("user:7"))  # it missed the invalidation
    time.sleep(1.1)  # the lease it held has expired by now, and the breaker cooled down
    assert cache.get_many(victim_keys + other_keys) == {}
    assert cache.get("untagged") == "kept"
    # The fence was made good and cleared: new entries on it work again.
    cache.set(victim_keys[0], "new", tags=["user:7"])
    assert cache.get(victim_keys[0]) == "new"
    assert policy_count(cache, "fenced", victim.url) == 1
    fences = [
        s.client().hget(f"{cache.key_prefix}:_tc:meta", f"f:{cache._partitions[3].id}")
        for s in clean_redis_servers[:3]
    ]
    assert fences == [None, None, None]


def test_a_partition_that_cannot_be_vouched_for__does_not_serve_tagged_entries(
    clean_redis_servers, make_cache
):
    first, second = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([first.url, second.url], TAG_LEASE=0.5, **FAST)
    *keys, plain = keys_on(cache, first.url, count=4)
    cache.set_many(dict.fromkeys(keys, 1), tags=["t"])
    cache.set(plain, 1)
    assert cache.get_many(keys) == dict.fromkeys(keys, 1)
    second.pause()
    time.sleep(0.6)  # the first partition's lease runs out, and only the second could renew it
    assert cache.get_many(keys) == {}
    assert cache.get(plain) == 1
    second.resume()
    time.sleep(FAST["BREAKER_COOLDOWN"] + 0.1)
    # The peer kept its memory: it vouches again, and nothing was lost.
    assert cache.get_many(keys) == dict.fromkeys(keys, 1)


def test_a_peer_that_lost_its_memory__cannot_vouch_that_nothing_was_missed(
    clean_redis_servers, make_cache
):
    """The peer held the only record of what the first partition missed; restarted
    empty, it must not answer "nothing" but make the first drop its tagged entries."""
    first, second = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([first.url, second.url], TAG_LEASE=0.5, **FAST)
    keys = keys_on(cache, first.url, count=3)
    cache.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, "old")
    second.stop()
    second.start()  # no persistence: every fence it kept is gone
    time.sleep(0.6)
    assert cache.get_many(keys) == {}
    assert policy_count(cache, "fenced", first.url) == 1
    cache.set_many(dict.fromkeys(keys, "new"), tags=["t"])  # and it works again
    assert cache.get_many(keys) == dict.fromkeys(keys, "new")


def test_an_invalidation_that_cannot_be_fenced__raises_by_default(closed_port_url, make_cache):
    lonely = make_cache([closed_port_url], BREAKER_FAILURES=10, **FAST)
    with pytest.raises(InvalidationIncomplete):
        lonely.invalidate_tags("t")
    paired = make_cache([closed_port_url, "memory://fence-test"], BREAKER_FAILURES=10, **FAST)
    paired.invalidate_tags("t")  # the other partition records the fence: complete


def test_an_incomplete_invalidation_of_many_tags__names_the_first_few(closed_port_url, make_cache):
    """A bulk write can carry tens of thousands of tags: the message must stay short."""
    lonely = make_cache([closed_port_url], BREAKER_FAILURES=10, **FAST)
    tags = [f"row:{i}" for i in range(5_000)]
    with pytest.raises(InvalidationIncomplete) as raised:
        lonely.invalidate_tags(*tags)
    message = str(raised.value)
    assert "'row:0'" in message and "and 4,990 more" in message and "'row:4999'" not in message
    assert len(message) < 500
    assert sorted(raised.value.tags) == sorted(tags)  # all of them, for code that needs them


def test_an_invalidation_that_cannot_be_fenced__is_logged_when_so_configured(
    closed_port_url, make_cache, caplog
):
    cache = make_cache([closed_port_url], INVALIDATION_FAILURE="log", **FAST)
    cache.invalidate_tags("t")  # logged and counted, not raised
    assert policy_count(cache, "incomplete") == 1
    assert "may still be served" in caplog.text


def test_invalidate_tags__returns_only_after_a_missed_partitions_lease_is_over(
    clean_redis_servers, make_cache
):
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(
        urls, TAG_LEASE=1.5, BREAKER_FAILURES=1, SOCKET_TIMEOUT=0.2, BREAKER_COOLDOWN=0.3
    )
    victim = clean_redis_servers[0]
    victim_keys = keys_on(cache, victim.url, count=3)
    cache.set_many(dict.fromkeys(victim_keys, "old"), tags=["t"])
    assert len(cache.get_many(victim_keys)) == 3  # a fresh 1.5 s lease
    victim.pause()
    assert cache.get(victim_keys[0]) is None  # the breaker opens: nothing reaches the victim
    cache.invalidate_tags("t")
    victim.resume()
    time.sleep(0.35)  # the breaker cools down, well within the old lease
    # Had invalidate_tags returned while the old lease was in force, the victim
    # would still be trusted here and serve "old".
    assert cache.get_many(victim_keys) == {}


def test_clear_while_a_partition_is_away__fences_its_tagged_entries(
    clean_redis_servers, make_cache
):
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(urls, TAG_LEASE=0.5, BREAKER_FAILURES=1, **FAST)
    victim = clean_redis_servers[1]
    victim_keys = keys_on(cache, victim.url, count=3)
    cache.set_many(dict.fromkeys(victim_keys, "before clear"), tags=["t"])
    assert len(cache.get_many(victim_keys)) == 3
    victim.pause()
    assert cache.get(victim_keys[0]) is None  # the breaker opens: clear() cannot reach it
    cache.clear()
    victim.resume()
    assert victim.client().exists(cache.make_key(victim_keys[0])) == 1
    time.sleep(0.6)  # its lease and its breaker's cooldown are over
    assert cache.get_many(victim_keys) == {}


def test_logged_errors__keep_their_type_and_text(closed_port_url, make_cache, caplog):
    cache = make_cache([closed_port_url], **FAST)
    with caplog.at_level(logging.WARNING, logger="django_tiercache"):
        cache.get("k")
    [record] = caplog.records
    port = closed_port_url.rsplit(":", 1)[1].split("/")[0]
    assert record.getMessage().startswith(
        f"cache get on partition {closed_port_url} failed: ConnectionError: Error 111 "
        f"connecting to 127.0.0.1:{port}."
    )


def test_an_error_reply__is_logged_with_its_text_and_without_the_password(
    clean_redis_servers, make_cache, caplog
):
    server = clean_redis_servers[0]
    with server.client() as admin:
        admin.acl_setuser(
            "limited",
            enabled=True,
            passwords=["+s3cret-pw"],
            keys=["*"],
            commands=["+@all", "-fcall"],
        )
    try:
        url = f"redis://limited:s3cret-pw@127.0.0.1:{server.port}/0"
        cache = make_cache([url], **FAST)
        with caplog.at_level(logging.WARNING, logger="django_tiercache"):
            assert cache.get("k", "miss") == "miss"
    finally:
        with server.client() as admin:
            admin.acl_deluser("limited")
    [record] = caplog.records
    message = record.getMessage()
    assert message.startswith(
        f"cache get on partition redis://limited:***@127.0.0.1:{server.port}/0 failed: "
        "NoPermissionError: "
    )
    assert message.endswith("no permissions to run the 'fcall' command")
    assert "s3cret" not in caplog.text


def test_credentials_in_an_error_text__never_reach_the_log(caplog):
    policy = ErrorPolicy(raise_errors=False)
    error = RedisConnectionError("cannot reach redis://admin:hunter2@db.internal:6379/0")
    with caplog.at_level(logging.WARNING, logger="django_tiercache"):
        policy.failed("get", "cache-a", error)
        policy.note("other", "cache-a", "retrying %s after %r", "rediss://:hunter2@h/1", error)
    assert "hunter2" not in caplog.text
    assert caplog.records[0].getMessage() == (
        "cache get on partition cache-a failed: "
        "ConnectionError: cannot reach redis://admin:***@db.internal:6379/0"
    )
    assert caplog.records[1].getMessage() == (
        "retrying rediss://:***@h/1 after "
        "ConnectionError: cannot reach redis://admin:***@db.internal:6379/0"
    )
