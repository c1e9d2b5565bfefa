"""Every method that changes an entry drops this process's L1 copy at once.

The table below names every public method of TierCache that can change what a
key holds, with a call and what a read must show right after it; the guard test
fails when the backend grows a method the table does not list (nor the list of
read-only ones), so a new method cannot forget its L1 copy. Real Redis.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta

import pytest
import redis

from django_tiercache.backend import TierCache
from tests.redis_servers import SHARED_REDIS_URL
from tests.test_l1 import L1, TAG, read_into_l1, wait_live

GONE = object()

# method -> (call on the cache with key "k", what get("k") shows after it)
MUTATIONS = {
    "set": (lambda c: c.set("k", 2), 2),
    "set_many": (lambda c: c.set_many({"k": 2}), 2),
    "set_many_tagged": (lambda c: c.set_many_tagged({"k": (2, [TAG])}), 2),
    "add": (lambda c: c.add("k", 2), 1),  # the key exists: add changes nothing
    "get_or_set": (lambda c: c.get_or_set("k", 2), 1),
    "get_or_set_many": (lambda c: c.get_or_set_many({"k": (TAG,)}, lambda keys: {}), 1),
    "delete": (lambda c: c.delete("k"), GONE),
    "delete_many": (lambda c: c.delete_many(["k"]), GONE),
    "delete_pattern": (lambda c: c.delete_pattern("k*"), GONE),
    "incr": (lambda c: c.incr("k"), 2),
    "decr": (lambda c: c.decr("k"), 0),
    "touch": (lambda c: c.touch("k", 0), GONE),
    "expire": (lambda c: c.expire("k", 0), GONE),
    "pexpire": (lambda c: c.pexpire("k", 0), GONE),
    "expire_at": (lambda c: c.expire_at("k", time.time() - 10), GONE),
    "pexpire_at": (lambda c: c.pexpire_at("k", time.time() - 10), GONE),
    "persist": (lambda c: c.persist("k"), 1),
    "invalidate_tags": (lambda c: c.invalidate_tags(TAG), GONE),
    "lock_tags": (lambda c: c.lock_tags("writer", [TAG], 5), GONE),
    "clear": (lambda c: c.clear(), GONE),
    "incr_version": (lambda c: c.incr_version("k"), GONE),  # moved to version 2
    "decr_version": (lambda c: (c.set("k", 5, version=2), c.decr_version("k", version=2)), 5),
    # The hash, set and sorted-set commands: writing into a destination replaces
    # the entry there (and drops its copies) ...
    "sdiffstore": (lambda c: (c.sadd("src", 1), c.sdiffstore("k", "src")), GONE),
    "sinterstore": (lambda c: (c.sadd("src", 1), c.sinterstore("k", "src")), GONE),
    "sunionstore": (lambda c: (c.sadd("src", 1), c.sunionstore("k", "src")), GONE),
    # ... and every other one refuses a key that holds an entry (WRONGTYPE), which keeps it.
    **{
        name: (lambda c, call=call: refused(call, c), 1)
        for name, call in {
            "hset": lambda c: c.hset("k", "f", 2),
            "hdel": lambda c: c.hdel("k", "f"),
            "sadd": lambda c: c.sadd("k", 2),
            "srem": lambda c: c.srem("k", 2),
            "spop": lambda c: c.spop("k"),
            "smove": lambda c: (c.sadd("src", 2), c.smove("src", "k", 2)),
            "zadd": lambda c: c.zadd("k", {"m": 1.0}),
            "zincrby": lambda c: c.zincrby("k", 1.0, "m"),
            "zrem": lambda c: c.zrem("k", "m"),
            "zremrangebyscore": lambda c: c.zremrangebyscore("k", 0, 10),
            "zpopmax": lambda c: c.zpopmax("k"),
            "zpopmin": lambda c: c.zpopmin("k"),
        }.items()
    },
}
READ_ONLY = {
    "get", "get_many", "has_key", "ttl", "pttl", "keys", "iter_keys", "make_key",
    "make_and_validate_key", "validate_key", "get_backend_timeout", "partition_for",
    "lock", "unlock_tags", "close",
    "hlen", "hkeys", "hexists", "hget", "hgetall", "scard", "smembers", "sismember",
    "smismember", "srandmember", "sscan", "sscan_iter", "sdiff", "sinter", "sunion",
    "zcard", "zcount", "zscore", "zrank", "zrange", "zrevrange", "zrangebyscore",
    "zrevrangebyscore",
}  # fmt: skip


def refused(call, cache):
    """Redis refuses a hash or set command on a key that holds an entry."""
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        call(cache)


def test_every_public_method__is_listed_as_mutating_or_read_only():
    public = {
        name
        for name in dir(TierCache)
        if not name.startswith("_") and callable(getattr(TierCache, name))
    }
    sync = {name for name in public if not (name.startswith("a") and name[1:] in public)}
    assert sync - set(MUTATIONS) - READ_ONLY == set()


@pytest.fixture
def l1_cache(make_cache, prefix):
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1=L1)
    wait_live(cache)
    return cache


@pytest.fixture
def prefix():
    import uuid

    return f"l1m-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("method", sorted(MUTATIONS))
def test_a_change__is_seen_by_this_process_at_once(l1_cache, method):
    call, shown = MUTATIONS[method]
    l1_cache.set("k", 1, tags=[TAG], timeout=timedelta(minutes=5).total_seconds())
    assert read_into_l1(l1_cache, "k") == 1
    call(l1_cache)
    assert l1_cache.get("k", GONE) == shown


def test_delete_pattern__never_leaves_a_copy_in_1000_tries(l1_cache):
    l1_cache.set("pk:warm", 0, tags=[TAG])
    read_into_l1(l1_cache, "pk:warm")
    stale = 0
    for i in range(1000):
        l1_cache.set(f"pk:{i}", i, tags=[TAG])
        l1_cache.get(f"pk:{i}")  # an L1 copy, where the channel allows it
        l1_cache.delete_pattern(f"pk:{i}")
        stale += l1_cache.get(f"pk:{i}") is not None
    assert stale == 0


# -- junk on the channel --

JUNK = [b"", b"x", b"k", b"k{not json", b"t[1, 2]", b"k\xff\xfe", b'k{"a": 1}', b"\x00" * 50]


def test_junk_on_the_channel__is_counted_and_ignored_and_l1_stays_on(l1_cache):
    (partition,) = l1_cache._partitions
    channel = partition.store.channel
    publisher = redis.Redis.from_url(SHARED_REDIS_URL)
    l1_cache.set("k", 1)
    assert read_into_l1(l1_cache, "k") == 1
    stop = threading.Event()

    def junk():
        for message in itertools.cycle(JUNK):
            if stop.wait(0.01):  # one malformed message every 10 ms
                return
            publisher.publish(channel, message)

    sender = threading.Thread(target=junk)
    sender.start()
    samples = live = 0
    try:
        for _ in range(300):
            samples += 1
            live += l1_cache._l1.slots[0].live
            time.sleep(0.01)
    finally:
        stop.set()
        sender.join(5)
    assert live / samples >= 0.99
    assert l1_cache.make_key("k") in l1_cache._l1.entries  # the copy was never flushed
    assert l1_cache._l1.malformed_messages >= len(JUNK)
    assert l1_cache._policy.counts[("l1_malformed", partition.name)] >= len(JUNK)
    l1_cache.delete("k")
    assert l1_cache.get("k") is None  # real changes still arrive
