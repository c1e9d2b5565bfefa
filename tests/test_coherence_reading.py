"""How a subscriber reads its channel: hiredis off the socket, or redis-py's get_message().

Both must hear the same changes; the hiredis reading must never let a message that
left the socket go unapplied without saying so (settled() reads that flag)."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
import redis

from django_tiercache.storage import coherence
from tests.redis_servers import SHARED_REDIS_URL
from tests.test_l1 import L1, read_into_l1, wait_live

MESSAGE = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nk[]\r\n"


@pytest.fixture
def prefix():
    return f"rd{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pair():
    ours, server = socket.socketpair()
    yield coherence._RawReplies(ours), server
    ours.close()
    server.close()


def test_a_reply_received_in_two_parts__is_applied_once_whole_and_flagged_meanwhile(pair):
    raw, server = pair
    server.sendall(MESSAGE[:20])
    assert raw.received() == []
    assert raw.partial()  # off the socket, not applied: settled() must say no
    server.sendall(MESSAGE[20:])
    assert raw.received() == [{"type": "message", "channel": b"ch", "data": b"k[]"}]
    assert not raw.partial()


def test_pongs_of_both_protocols__count_and_redis_py_health_checks_do_not(pair):
    raw, server = pair
    server.sendall(
        b"+PONG\r\n"  # RESP3: a ping's reply in place
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"  # RESP2: a push
        b"$21\r\nredis-py-health-check\r\n"
        b"*2\r\n$4\r\npong\r\n$21\r\nredis-py-health-check\r\n"
    )
    assert [m["type"] for m in raw.received()] == ["pong", "pong"]


def test_an_error_or_a_closed_socket__ends_the_subscription(pair):
    raw, server = pair
    server.sendall(b"-ERR no\r\n")
    with pytest.raises(redis.ResponseError):
        raw.received()
    server.close()
    with pytest.raises(redis.ConnectionError):
        raw.received()


@pytest.mark.parametrize("reading", ["hiredis", "redis-py"])
def test_a_change_made_elsewhere__drops_the_copy_whichever_way_the_channel_is_read(
    make_cache,
    prefix,
    monkeypatch,
    reading,
):
    if reading == "redis-py":
        monkeypatch.setattr(coherence, "hiredis", None)
    cache = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix, L1=L1)
    writer = make_cache(SHARED_REDIS_URL, KEY_PREFIX=prefix)  # no L1: only the channel tells
    wait_live(cache)
    (subscriber,) = [s for s in coherence.subscribers() if s.channel == f"{prefix}:_tc:l1"]
    assert subscriber.reads_with == reading
    writer.set("k", "old", tags=["t"])
    assert read_into_l1(cache, "k") == "old"
    redis.Redis.from_url(SHARED_REDIS_URL).delete(cache.make_key("k"))  # behind its back
    assert cache.get("k") == "old"  # served from L1
    writer.invalidate_tags("t")
    deadline = time.monotonic() + 10
    while cache.make_key("k") in cache._l1.entries:
        assert time.monotonic() < deadline, "the invalidation never reached L1"
        time.sleep(0.005)
    assert cache.get("k") is None
