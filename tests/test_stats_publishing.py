"""Publishing counts exactly once: across lost replies, and across os.fork()."""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from django.core.cache import caches

from django_tiercache.hotkeys.record import record_of
from django_tiercache.stats.collection import recorder_of
from django_tiercache.stats.publishing import publish

TIERCACHE = "django_tiercache.backend.TierCache"
FORK_WARNING = "ignore:This process .* is multi-threaded:DeprecationWarning"


@pytest.fixture
def server(clean_redis_servers):
    return clean_redis_servers[0]


@pytest.fixture
def cache(settings, server):
    """A cache named in CACHES (so it publishes to Redis) on a server the test may pause."""
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": server.url,
            "KEY_PREFIX": f"publish-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"SOCKET_TIMEOUT": 0.5},
        }
    }
    cache = caches["default"]
    cache.set("k", 1)
    return cache


def hits(cache, times):
    for _ in range(times):
        assert cache.get("k") == 1


def published_hits(recorder):
    return recorder.sink.read().totals.get("hit|redis", 0)


def publish_unanswered(recorder, server):
    """Publish while the server is frozen: the command is sent, its reply never comes."""
    server.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            publish(recorder)
    finally:
        server.resume()  # the server now reads the command and applies it


def in_child(work):
    """Run work() in a forked child; its exit status is the test's concern."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            work()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_publish__whose_reply_timed_out_counts_once(cache, server):
    recorder = recorder_of(cache)
    hits(cache, 5)
    publish(recorder)
    hits(cache, 5)
    publish_unanswered(recorder, server)
    publish(recorder)  # sends the unanswered one again, then what is new
    assert published_hits(recorder) == 10
    hits(cache, 1)
    publish(recorder)
    assert published_hits(recorder) == 11


@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_child__does_not_send_the_parents_unanswered_publication(cache, server):
    recorder = recorder_of(cache)
    hits(cache, 5)
    publish(recorder)
    hits(cache, 5)
    publish_unanswered(recorder, server)
    in_child(lambda: publish(recorder))
    publish(recorder)
    assert published_hits(recorder) == 10


@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_child__does_not_send_the_parents_counts(cache):
    recorder = recorder_of(cache)
    hits(cache, 7)

    def child():
        hits(cache, 1)  # the child's own read counts
        publish(recorder)

    in_child(child)
    publish(recorder)
    assert published_hits(recorder) == 8


@pytest.mark.filterwarnings(FORK_WARNING)
def test_forked_child__does_not_send_the_parents_hot_key_samples(make_cache, server):
    cache = make_cache(server.url, HOT_KEYS={"SAMPLE": 1.0, "FLUSH": 3600})
    cache.set("hot", 1)
    for _ in range(3):
        cache.get("hot")
    record = record_of(cache)
    in_child(record.flush)
    assert record.top() == []  # the child had nothing of its own to send
    record.flush()
    ((key, score),) = record.top()
    assert key.endswith("hot") and score == 3
