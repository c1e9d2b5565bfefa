"""Leases and fences behave the same on memory:// partitions as on Redis ones.

The in-process store mirrors the Redis Functions; these tests drive the
fencing protocol directly (a partition told it missed an invalidation, a
peer that lost its memory, a lost meta record) on a pair of partitions of
each kind.
"""

from __future__ import annotations

import time
import uuid

import pytest

from django_tiercache.storage.hooks import declare_lock_horizon
from tests.test_failures import keys_on, policy_count


@pytest.fixture(params=["memory", "redis"])
def pair(request, make_cache):
    """A cache over two partitions of one kind, with a short lease."""
    if request.param == "memory":
        name = uuid.uuid4().hex[:8]
        urls = [f"memory://fence-a-{name}", f"memory://fence-b-{name}"]
    else:
        urls = [s.url for s in request.getfixturevalue("clean_redis_servers")[:2]]
    return make_cache(urls, TAG_LEASE=0.3)


def forget(cache, partition):
    """Take the partition's meta record away, as an eviction would."""
    key = f"{cache.key_prefix}:_tc:meta"
    store = partition.store
    if hasattr(store, "space"):
        with store.space.lock:
            store.space.data.pop(key, None)
    else:
        store.client.delete(key)


def test_a_fenced_partition__drops_its_tagged_entries_at_its_next_lease(pair):
    first, second = pair._partitions
    keys = keys_on(pair, first.name, count=3)
    pair.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    pair.set("plain", "kept")
    assert pair.get_many(keys) == dict.fromkeys(keys, "old")
    pair._fencing.fence([first], ("t",))  # as if the invalidation had missed it
    assert pair.get_many(keys) == {}  # the wait outlasted its lease: renewed, fenced
    assert policy_count(pair, "fenced", first.name) == 1
    pair.set_many(dict.fromkeys(keys, "new"), tags=["t"])
    assert pair.get_many(keys) == dict.fromkeys(keys, "new")  # and the fence was cleared
    assert policy_count(pair, "fenced", first.name) == 1


def test_a_peer_that_forgets__has_the_partition_fenced(pair):
    first, second = pair._partitions
    keys = keys_on(pair, first.name, count=3)
    pair.set_many(dict.fromkeys(keys, 1), tags=["t"])
    assert pair.get_many(keys) == dict.fromkeys(keys, 1)
    forget(pair, second)
    time.sleep(0.35)
    assert pair.get_many(keys) == {}
    assert policy_count(pair, "fenced", first.name) == 1


def test_a_partition_that_forgets_its_locks__holds_fills_for_the_horizon(pair):
    first, _ = pair._partitions
    declare_lock_horizon(f"{pair.key_prefix}:_tc:", 0.5)
    (key,) = keys_on(pair, first.name, count=1)
    pair.set(key, "before", tags=["t"])
    assert pair.get(key) == "before"
    forget(pair, first)
    pair.set(key, "during", tags=["t"])
    assert pair.get(key) is None
    time.sleep(0.55)
    pair.set(key, "after", tags=["t"])
    assert pair.get(key) == "after"


def test_a_lease_that_expired_before_it_was_put_in_force__is_not_granted(pair):
    first, _ = pair._partitions
    prepared = first.run("lease_prepare", "nonce", 1, [])
    assert prepared.ok
    time.sleep(0.01)
    assert first.run("lease_activate", "nonce", 0, {}).value is False
    assert first.run("clear_fence", "nobody", 1).ok
