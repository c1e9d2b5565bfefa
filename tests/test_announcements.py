"""Which changes a partition announces to the L1 tiers, read off its channel.

Every subscribed process pays for each message it hears, so the two changes
that cannot make any copy wrong are not announced: an unlock whose locks held
throughout, and a fill from a snapshot. Whatever else could leave a copy wrong
still is (tests/test_l1.py shows what the messages do to copies).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from django_tiercache.storage.stores.slots import bucket_field, bucket_key, slot_name
from tests.redis_servers import SHARED_REDIS_URL

TAG = "shop.product:7"
SLOT = slot_name(TAG)  # what messages name: the tag's slot


class Channel:
    """A subscriber to one namespace's channel, as every L1 process is."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.raw = redis.Redis.from_url(SHARED_REDIS_URL)
        self.pubsub = self.raw.pubsub()
        self.pubsub.subscribe(f"{prefix}:_tc:l1")
        deadline = time.monotonic() + 10
        while self.pubsub.get_message(timeout=0.1) is None:  # the subscription's confirmation
            assert time.monotonic() < deadline, "never subscribed"

    def heard(self) -> list[str]:
        """Every message published since the last call: a marker sent now arrives
        after them (a channel keeps its order)."""
        marker = f"marker-{uuid.uuid4().hex}"
        self.raw.publish(f"{self.prefix}:_tc:l1", marker)
        out: list[str] = []
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "the marker never arrived"
            message = self.pubsub.get_message(timeout=0.1)
            if message is None or message["type"] != "message":
                continue
            data = message["data"].decode()
            if data == marker:
                return out
            out.append(data)

    def close(self) -> None:
        self.pubsub.close()
        self.raw.close()


@pytest.fixture
def cache(make_cache):
    cache = make_cache(SHARED_REDIS_URL)
    cache.get("warm-up")  # the greeting's own announcements come first
    return cache


@pytest.fixture
def channel(cache):
    channel = Channel(cache.key_prefix)
    yield channel
    channel.close()


def tag_messages(heard: list[str]) -> list[list[str]]:
    return [json.loads(m[1:]) for m in heard if m.startswith("t")]


def key_messages(heard: list[str]) -> list[list[str]]:
    return [json.loads(m[1:]) for m in heard if m.startswith("k")]


def test_an_unlock_whose_locks_held__is_not_announced_again(cache, channel):
    cache.lock_tags("writer-1", [TAG], 30)
    assert tag_messages(channel.heard()) == [[SLOT]]  # the lock drops every copy
    cache.unlock_tags("writer-1", [TAG])
    assert tag_messages(channel.heard()) == []


def test_an_unlock_after_its_lock_lapsed__is_announced(cache, channel):
    """Fills were allowed once the lock lapsed: what they stored may predate the
    writer's commit, and copies of it may be anywhere."""
    cache.lock_tags("writer-1", [TAG], 0.05)
    channel.heard()
    time.sleep(0.1)
    cache.unlock_tags("writer-1", [TAG])
    assert tag_messages(channel.heard()) == [[SLOT]]


def test_an_unlock_that_finds_a_token__is_announced(cache, channel):
    """A token made while the lock looked held (a server clock stepped forward,
    say) means something may have been stored under it: announced."""
    cache.lock_tags("writer-1", [TAG], 30)
    channel.heard()
    ns = f"{cache.key_prefix}:_tc:"
    channel.raw.hset(bucket_key(ns, TAG), bucket_field(TAG), 12345)  # a token made meanwhile
    cache.unlock_tags("writer-1", [TAG])
    assert tag_messages(channel.heard()) == [[SLOT]]


def test_an_unlock_whose_meta_hash_was_lost__is_announced(cache, channel):
    cache.lock_tags("writer-1", [TAG], 30)
    channel.heard()
    channel.raw.delete(f"{cache.key_prefix}:_tc:meta")  # the locks with it
    cache.unlock_tags("writer-1", [TAG])
    assert tag_messages(channel.heard()) == [[SLOT]]


def test_an_unlock_of_a_tag_another_writer_took_over__is_announced(cache, channel):
    """Only this writer's own locks vouch for the time since its lock."""
    cache.lock_tags("writer-1", [TAG, "other"], 30)
    channel.heard()
    meta = f"{cache.key_prefix}:_tc:meta"
    channel.raw.hdel(meta, f"l:{SLOT[1:]}")  # as if it lapsed and another writer came
    cache.lock_tags("writer-2", [TAG], 30)
    channel.heard()
    cache.unlock_tags("writer-1", [TAG, "other"])
    assert [set(tags) for tags in tag_messages(channel.heard())] == [{SLOT, slot_name("other")}]
    cache.unlock_tags("writer-2", [TAG])


def test_a_fill_from_a_snapshot__is_not_announced_and_a_set_or_add_is(cache, channel):
    assert cache.get_or_set("filled", "v", tags=[TAG]) == "v"
    assert cache.get("filled") == "v"  # stored
    assert key_messages(channel.heard()) == []
    cache.set("set", "v", tags=[TAG])
    cache.add("added", "v", tags=[TAG])
    cache.get_or_set("untagged", "v")  # no snapshot: a plain add
    made = [cache.make_key(k) for k in ("set", "added", "untagged")]
    assert [keys for keys in key_messages(channel.heard())] == [[k] for k in made]
