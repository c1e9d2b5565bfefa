"""Hot keys: sampled reads, the decayed bounded record in Redis, and warm_cache --hot."""

from __future__ import annotations

import io
import json
import time
import uuid

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

import django_tiercache
from django_tiercache.hotkeys.record import record_of
from django_tiercache.orm.cache_aside import get_object, object_key
from django_tiercache.storage import options as options_module
from tests.testapp.models import Product

RECORD_ONLY_WHEN_FLUSHED = {"SAMPLE": 1.0, "FLUSH": 3600}


@pytest.fixture(autouse=True)
def _isolated(isolated_warmers):
    """Each test registers its own warmers; none outlives it (see conftest)."""


@pytest.fixture
def hot_cache(make_cache, shared_redis_url):
    """A TierCache recording every read (flushed by hand unless FLUSH says otherwise)."""

    def build(location=None, **setting):
        return make_cache(
            location or shared_redis_url, HOT_KEYS={**RECORD_ONLY_WHEN_FLUSHED, **setting}
        )

    return build


def read(cache, key, times=1):
    for _ in range(times):
        cache.get(key)


def record_key(cache, part=""):
    return f"{cache.key_prefix}:_tc:hot{part}"


def test_sampled_reads__rank_keys_by_reads(hot_cache):
    cache = hot_cache()
    read(cache, "a", 5)
    cache.get_many(["a", "b"])
    cache.get_many(["b", "c"])
    record_of(cache).flush()
    made = cache.make_key
    assert record_of(cache).top() == [(made("a"), 6.0), (made("b"), 2.0), (made("c"), 1.0)]
    assert record_of(cache).top(limit=1) == [(made("a"), 6.0)]


def test_sampling__scores_estimate_reads_from_a_fraction_of_them(hot_cache):
    cache = hot_cache(SAMPLE=0.5)
    read(cache, "a", 2000)
    record_of(cache).flush()
    ((key, score),) = record_of(cache).top()
    assert 1700 <= score <= 2300  # 2000 +- 7 standard deviations


def test_off__reads_record_nothing(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url)
    read(cache, "a", 10)
    assert record_of(cache) is None
    client = cache._partitions[0].store.client
    assert client.exists(record_key(cache)) == 0


def test_record__is_trimmed_to_size_and_origins_go_with_trimmed_keys(hot_cache):
    cache = hot_cache(SIZE=3)
    record = record_of(cache)
    for i in range(6):
        read(cache, f"k{i}", i + 1)
    record.flush()
    made = cache.make_key
    assert [key for key, _ in record.top()] == [made("k5"), made("k4"), made("k3")]
    record.remember(
        {made("k3"): '["warmer", "w", "k3", null]', made("k0"): '["warmer", "w", "k0", null]'}
    )
    assert record.origins([made("k3"), made("k0")]) == {made("k3"): ["warmer", "w", "k3", None]}
    read(cache, "k9", 50)
    record.flush()
    assert made("k3") not in record.members()
    client = cache._partitions[0].store.client
    assert client.hlen(record_key(cache, ":origin")) == 0


def test_decay__halves_scores_once_per_half_life_whoever_flushes(hot_cache):
    cache = hot_cache(HALF_LIFE=100)
    record, client = record_of(cache), cache._partitions[0].store.client
    read(cache, "a", 8)
    record.flush()
    seconds, micros = client.time()
    client.set(record_key(cache, ":decayed"), seconds * 1000 + micros // 1000 - 100_000)
    record.flush()
    record.flush()  # moments later: nothing more to decay
    ((_, score),) = record.top()
    assert 3.99 < score <= 4.0


def test_record__is_kept_on_every_partition_and_survives_one_stopping(
    hot_cache, clean_redis_servers
):
    cache = hot_cache([s.url for s in clean_redis_servers])
    read(cache, "a", 3)
    record_of(cache).flush()
    for server in clean_redis_servers:
        assert server.client().zscore(record_key(cache), cache.make_key("a")) == 3.0
    clean_redis_servers[0].stop()
    read(cache, "b")
    record_of(cache).flush()  # the stopped copy is skipped, not raised
    assert [k for k, _ in record_of(cache).top()] == [cache.make_key("a"), cache.make_key("b")]


def test_flush__happens_in_the_background_when_due(hot_cache):
    cache = hot_cache(FLUSH=0.05)
    read(cache, "a")
    time.sleep(0.1)
    read(cache, "b")  # due: starts a flush thread
    deadline = time.monotonic() + 5
    while len(record_of(cache).top()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {k for k, _ in record_of(cache).top()} == {cache.make_key("a"), cache.make_key("b")}


@pytest.mark.parametrize(
    "value",
    [
        "yes",
        {"SAMPLE": 0},
        {"SAMPLE": 1.5},
        {"SIZE": 10.5},
        {"HALF_LIFE": -1},
        {"FLUSH": True},
        {"LOCATION": "memory://x"},
        {"COLOUR": "red"},
    ],
)
def test_options__bad_hot_keys_settings_are_e003(value):
    problems = options_module.parse("redis://127.0.0.1:6379/0", {"HOT_KEYS": value}).problems
    assert [p.id for p in problems] == ["E003"]
    assert "HOT_KEYS" in problems[0].msg


def test_options__hot_keys_need_a_redis_server(make_cache, shared_redis_url):
    with pytest.raises(ImproperlyConfigured, match="HOT_KEYS'] needs a Redis partition"):
        make_cache(f"memory://{uuid.uuid4().hex}", HOT_KEYS=True).get("k")
    cache = make_cache(f"memory://{uuid.uuid4().hex}", HOT_KEYS={"LOCATION": shared_redis_url})
    assert record_of(cache).targets[0].name == shared_redis_url


# -- warm_cache --hot --


def warm(*args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command("warm_cache", *args, stdout=out, stderr=err, **options)
    return out.getvalue()


@pytest.fixture
def hot_default(settings, clean_redis_servers, shared_redis_url):
    """ "default" records hot keys on a server of its own, which outlives cache.clear()."""
    setting = {**RECORD_ONLY_WHEN_FLUSHED, "LOCATION": clean_redis_servers[0].url}
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"h{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"HOT_KEYS": setting},
        }
    }
    yield caches["default"]
    caches["default"].clear()


def test_hot__rewarms_the_hot_keys_from_their_producers_after_a_flush(
    hot_default, transactional_db, django_assert_num_queries
):
    cache = hot_default
    products = [Product.objects.create(name=f"hot-{i}") for i in range(3)]
    asked = []
    django_tiercache.warmer("items")(lambda: ((f"item:{i}", i) for i in range(50)))

    @django_tiercache.warmer("keyed")
    def keyed(keys=None):
        asked.append(keys)
        return [(f"keyed:{i}", f"v{i}") for i in range(5) if keys is None or f"keyed:{i}" in keys]

    warm("items", "keyed", "--model", "testapp.Product")
    read(cache, "item:3", 3)
    read(cache, "keyed:1", 2)
    get_object(Product, products[1].pk)
    read(cache, "never-warmed")
    record_of(cache).flush()
    warm("items", "keyed", "--model", "testapp.Product")  # now records who made the hot keys
    cache.clear()  # what a Redis restart or a flush does to the cache
    out = warm("--hot")

    assert cache.get_many(["item:3", "item:4", "keyed:1", "keyed:2"]) == {
        "item:3": 3,
        "keyed:1": "v1",
    }
    assert asked[-1] == ["keyed:1"]
    with django_assert_num_queries(0):
        assert get_object(Product, products[1].pk).name == "hot-1"
    assert cache.get(object_key(Product, products[0].pk)) is None
    rows = {line.split("  ")[0]: line.split()[-6:-2] for line in out.splitlines()[1:-1]}
    assert rows["hot items"] == ["1", "1", "0", "0"]  # items warmed skipped failed
    assert rows["hot, producer unknown"] == ["1", "0", "1", "0"]


def test_hot__warming_reads_are_not_counted_as_traffic(hot_default):
    django_tiercache.warmer("items")(lambda: ((f"item:{i}", i) for i in range(20)))
    warm("items", "--only-missing")
    record_of(hot_default).flush()
    assert record_of(hot_default).top() == []


def test_hot__a_cache_without_a_record_is_a_bad_request(settings, shared_redis_url):
    settings.CACHES = {
        "default": {"BACKEND": "django_tiercache.backend.TierCache", "LOCATION": shared_redis_url}
    }
    with pytest.raises(CommandError, match="keeps no hot-key record") as failure:
        warm("--hot")
    assert failure.value.returncode == 2


def test_hot__origins_name_the_warmer_key_and_pk(hot_default, transactional_db):
    product = Product.objects.create(name="origin")
    get_object(Product, product.pk)
    record_of(hot_default).flush()
    warm("--model", "testapp.Product")
    made = hot_default.make_key(object_key(Product, product.pk))
    origin = record_of(hot_default).origins([made])[made]
    assert origin == ["model", "testapp.product", object_key(Product, product.pk), str(product.pk)]
    assert json.dumps(origin)
