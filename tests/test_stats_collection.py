"""What each process counts: hits, misses, writes, invalidations, latency, errors, trips."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from django.core.cache import caches

from django_tiercache.stats import collection
from django_tiercache.stats.aggregation import parse, percentile, rates
from django_tiercache.stats.collection import NULL, bucket, bucket_bounds, recorder_of
from django_tiercache.stats.publishing import LocalSink, RedisSink, field_name


def totals(cache):
    """The recorder's counts as the published fields would parse."""
    return parse({field_name(k): v for k, v in recorder_of(cache).totals().items()})


@pytest.fixture
def memory_cache(make_cache):
    return make_cache(f"memory://{uuid.uuid4().hex}")


# -- buckets --


@pytest.mark.parametrize("us", [0, 1, 7, 8, 9, 10, 99, 100, 1000, 12_345, 1_000_000, 30_000_000])
def test_bucket__holds_the_duration_within_its_bounds(us):
    low, high = bucket_bounds(bucket(us * 1000))
    assert low <= us < high
    assert high - low <= max(1.0, 0.25 * low)  # each at most 25% wide


def test_buckets__are_contiguous_and_bounded():
    for index in range(collection.LAST_BUCKET):
        assert bucket_bounds(index)[1] == bucket_bounds(index + 1)[0]
    assert bucket(10**15) == collection.LAST_BUCKET  # days: still the last bucket


def test_percentile__interpolates_inside_the_bucket():
    from collections import Counter

    durations_us = list(range(100, 1100))  # 1000 calls, 0.1 ms to 1.1 ms
    buckets = Counter(bucket(us * 1000) for us in durations_us)
    # Exact within a bucket's width (25%); interpolation does better where buckets are full.
    assert percentile(buckets, 0.5) == pytest.approx(0.6, rel=0.05)
    assert percentile(buckets, 0.99) == pytest.approx(1.09, rel=0.25)
    assert percentile(Counter(), 0.5) is None


# -- what is counted --


def test_reads__count_hits_and_misses_per_tier(memory_cache):
    memory_cache.set_many({"a": 1, "b": 2})
    memory_cache.get("a")
    memory_cache.get_many(["a", "b", "c", "d"])
    memory_cache.get("missing")
    figures = rates(totals(memory_cache))
    assert (figures["hits"], figures["misses"]) == (3, 3)
    assert figures["by_tier"] == {"memory": {"hit": 3, "miss": 3, "set": 2, "delete": 0}}
    assert figures["hit_rate"] == 0.5


def test_redis_partitions__count_under_the_redis_tier(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url)
    cache.set("a", 1)
    cache.get("a")
    assert rates(totals(cache))["by_tier"]["redis"]["hit"] == 1


def test_writes_and_deletes__are_counted(memory_cache):
    memory_cache.set("a", 1)
    memory_cache.add("a", 2)  # not stored: not counted
    memory_cache.set_many({"b": 1, "c": 2})
    memory_cache.delete("a")
    memory_cache.delete_many(["b", "c", "nothing"])
    figures = rates(totals(memory_cache))
    assert figures["sets"] == 3
    assert figures["deletes"] == 4  # keys asked to delete


def test_invalidations__are_counted_by_tag_prefix(memory_cache):
    memory_cache.invalidate_tags("shop.product:1", "shop.product:2", "shop.category:9")
    memory_cache.invalidate_tags("global")
    assert dict(totals(memory_cache).invalidations) == {
        "shop.product": 2,
        "shop.category": 1,
        "global": 1,
    }


def test_invalidations__keep_a_bounded_number_of_prefixes(memory_cache, monkeypatch):
    monkeypatch.setattr(collection, "MAX_TAG_PREFIXES", 3)
    memory_cache.invalidate_tags(*(f"user-{n}" for n in range(10)))
    counted = totals(memory_cache).invalidations
    assert len(counted) == 4
    assert counted[collection.OTHER_PREFIX] == 7


def test_partition_calls__are_timed_per_operation_and_partition(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url, PARTITION_NAMES=["main"])
    for n in range(20):
        cache.set(f"k{n}", n)
        cache.get(f"k{n}")
    figures = totals(cache)
    reads = figures.latency[("read", "main")]
    assert sum(reads.values()) == 20
    assert sum(figures.latency[("write", "main")].values()) == 20
    mean_ms = figures.latency_ns[("read", "main")] / 20 / 1e6
    assert 0 < mean_ms < 1000
    low_ms = bucket_bounds(min(reads))[0] / 1000
    high_ms = bucket_bounds(max(reads))[1] / 1000
    assert low_ms <= mean_ms <= high_ms


def test_failed_calls__count_errors_and_breaker_trips(make_cache, closed_port_url):
    cache = make_cache(closed_port_url, PARTITION_NAMES=["dead"], BREAKER_FAILURES=2)
    for n in range(5):
        cache.get(f"k{n}")
    figures = totals(cache)
    assert figures.errors[("get", "dead")] == 5
    assert figures.trips["dead"] == 1
    # Calls refused by the open breaker never reached the network: not timed.
    assert sum(figures.latency[("read", "dead")].values()) == 2
    assert rates(figures)["misses"] == 5


def test_tampered_entries__are_counted(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url, PARTITION_NAMES=["main"])
    cache.set("victim", "value")
    client = redis.Redis.from_url(shared_redis_url)
    client.set(cache.make_key("victim"), b"forged bytes")
    assert cache.get("victim") is None
    figures = totals(cache)
    assert figures.events[("tampered", "main")] == 1
    assert rates(figures)["tampered"] == 1


def test_threads__count_into_one_recorder_without_losing_updates(memory_cache):
    memory_cache.set("k", 1)

    def read():
        for _ in range(2000):
            memory_cache.get("k")

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert rates(totals(memory_cache))["hits"] == 16_000  # the ended threads still count


# -- which recorder, and where it publishes --


def test_cache_from_settings__is_named_by_its_alias_and_shares_through_redis(
    settings, shared_redis_url
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"stats-{uuid.uuid4().hex[:8]}",
        }
    }
    recorder = recorder_of(caches["default"])
    assert recorder.alias == "default"
    assert isinstance(recorder.sink, RedisSink)


def test_threads_of_one_cache__share_one_recorder(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": f"memory://{uuid.uuid4().hex}",
        }
    }
    seen = []
    thread = threading.Thread(target=lambda: seen.append(caches["default"]))
    thread.start()
    thread.join()
    assert seen[0] is not caches["default"]  # Django builds one backend per thread...
    assert recorder_of(seen[0]) is recorder_of(caches["default"])  # ...counting together


def test_cache_built_by_hand__keeps_its_figures_in_this_process(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url)
    cache.set("a", 1)
    recorder = recorder_of(cache)
    assert isinstance(recorder.sink, LocalSink)
    from django_tiercache.stats.publishing import publish

    publish(recorder)
    client = redis.Redis.from_url(shared_redis_url)
    assert not list(client.scan_iter(f"{cache.key_prefix}:_tc:stats:*"))


def test_stats_off__attaches_nothing(settings, make_cache):
    settings.TIERCACHE = {"STATS": False}
    cache = make_cache(f"memory://{uuid.uuid4().hex}")
    assert recorder_of(cache) is NULL
    assert all(p.observer is None for p in cache._partitions)
    cache.set("a", 1)
    assert cache.get("a") == 1


def test_bad_stats_settings__name_themselves(settings, make_cache):
    from django.core.exceptions import ImproperlyConfigured

    settings.TIERCACHE = {"STATS_INTERVAL": 0}
    with pytest.raises(ImproperlyConfigured, match="STATS_INTERVAL"):
        make_cache("memory://bad-settings").get("k")
