"""`cached`, single flight and XFetch, with real Redis and real OS processes."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import threading
import time
import uuid

import pytest
import redis
from django.core.cache import caches

from django_tiercache import cached
from tests import cached_functions
from tests.redis_servers import SHARED_REDIS_URL
from tests.test_l1 import L1, workers  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("empty_default_cache")


@pytest.fixture
def empty_default_cache():
    caches["default"].clear()
    cached_functions.calls.clear()
    yield
    caches["default"].clear()


def test_cached__computes_once_then_reads_the_cache():
    assert cached_functions.best_sellers(7) == [70, 71, 72]
    assert cached_functions.best_sellers(7) == [70, 71, 72]
    assert cached_functions.best_sellers(shop_id=7, limit=3) == [70, 71, 72]
    assert cached_functions.calls == [("best_sellers", 7)]


def test_cached_invalidate__drops_one_result():
    cached_functions.best_sellers(7)
    cached_functions.best_sellers(8)
    cached_functions.best_sellers.invalidate(7)
    cached_functions.best_sellers(7)
    cached_functions.best_sellers(8)
    assert cached_functions.calls == [("best_sellers", 7), ("best_sellers", 8), ("best_sellers", 7)]


def test_cached_tags__are_invalidated_with_invalidate_tags():
    cached_functions.best_sellers(7)
    caches["default"].invalidate_tags("shop.shop:7")
    cached_functions.best_sellers(7)
    assert cached_functions.calls == [("best_sellers", 7)] * 2


def test_cached__async_functions():
    assert asyncio.run(cached_functions.async_total(5)) == 10
    assert asyncio.run(cached_functions.async_total(5)) == 10
    assert cached_functions.calls == [("async_total", 5)]


def test_cached__argument_without_a_stable_key_is_a_type_error():
    with pytest.raises(TypeError, match=r"argument 'options' \(builtins.object\)"):
        cached_functions.price("sku", decimal.Decimal("1.50"), {"gift": object()})


def test_cached_keys__are_the_same_in_another_process(workers):  # noqa: F811
    worker = workers(SHARED_REDIS_URL, f"k{uuid.uuid4().hex[:8]}", {"L1": L1})
    options = {"gift": True, "colours": ["red", "blue"], "n": 3}
    theirs = worker("cached_key", "sku-1", "1.50", options, 7, "2026-01-31")
    ours = [
        cached_functions.price.cache_key("sku-1", decimal.Decimal("1.50"), options),
        cached_functions.best_sellers.cache_key(7, datetime.date(2026, 1, 31)),
    ]
    assert theirs == ours
    assert ours[0] != cached_functions.price.cache_key("sku-1", decimal.Decimal("1.5"), options)


def test_xfetch__recomputes_a_hot_key_before_it_expires():
    computed = []

    @cached(timeout=30, key_prefix=f"xfetch-{uuid.uuid4().hex}", beta=1.0)
    def slow():
        computed.append(1)
        time.sleep(0.02)
        return len(computed)

    slow()
    # Pretend the key is close to expiry: rewrite its envelope with 1 s left
    # and a compute time of 2 s, so each call recomputes with probability 1 - e^-2.
    key = slow.cache_key()
    marker, value, _, _ = caches["default"].get(key)
    caches["default"].set(key, (marker, value, 2.0, time.time() + 1), 30)
    for _ in range(20):
        slow()
    assert len(computed) > 1
    assert caches["default"].get(key)[3] > time.time() + 20  # recomputed: a new expiry


def test_xfetch_off__never_recomputes_early():
    computed = []

    @cached(timeout=30, key_prefix=f"xfetch-{uuid.uuid4().hex}", beta=0)
    def slow():
        computed.append(1)
        return 1

    slow()
    key = slow.cache_key()
    marker, value, _, _ = caches["default"].get(key)
    caches["default"].set(key, (marker, value, 2.0, time.time() + 1), 30)
    for _ in range(20):
        slow()
    assert len(computed) == 1


def test_single_flight__one_loader_for_50_callers_in_two_processes(workers):  # noqa: F811
    prefix = f"sf{uuid.uuid4().hex[:8]}"
    counter = f"{prefix}:loads"
    first = workers(SHARED_REDIS_URL, prefix, {"L1": L1})
    second = workers(SHARED_REDIS_URL, prefix, {})
    for worker in (first, second):
        worker.send("single_flight", "cold", 25, SHARED_REDIS_URL, counter)
    results = first.receive() + second.receive()
    loads = int(redis.Redis.from_url(SHARED_REDIS_URL).get(counter) or 0)
    assert len(results) == 50
    assert loads == 1
    assert len({r["computed by"] for r in results}) == 1


def make_stale(func, *args):
    """Rewrite a result's envelope as past its timeout (still inside the stale window)."""
    key = func.cache_key(*args)
    marker, value, delta, _ = caches["default"].get(key)
    caches["default"].set(key, (marker, value, delta, time.time() - 1), 60)


def test_stale_while_revalidate__serves_the_old_value_while_one_caller_recomputes():
    release, recomputing = threading.Event(), threading.Event()
    computed = []

    @cached(timeout=30, key_prefix=f"swr-{uuid.uuid4().hex}", stale_while_revalidate=60)
    def report():
        computed.append(1)
        if len(computed) > 1:
            recomputing.set()
            release.wait(10)
        return len(computed)

    assert report() == 1
    make_stale(report)
    got = []
    revalidator = threading.Thread(target=lambda: got.append(report()))
    revalidator.start()
    try:
        assert recomputing.wait(10)
        assert [report() for _ in range(5)] == [1] * 5  # stale, without waiting or computing
    finally:
        release.set()
        revalidator.join(10)
    assert got == [2]
    assert len(computed) == 2
    assert report() == 2


def test_stale_while_revalidate__keeps_the_entry_for_the_stale_window():
    @cached(timeout=30, key_prefix=f"swr-{uuid.uuid4().hex}", stale_while_revalidate=60)
    def report():
        return 1

    report()
    assert caches["default"].ttl(report.cache_key()) > 60


def test_without_stale_while_revalidate__an_expired_result_is_recomputed():
    computed = []

    @cached(timeout=30, key_prefix=f"swr-{uuid.uuid4().hex}", beta=0)
    def report():
        computed.append(1)
        return len(computed)

    report()
    make_stale(report)
    assert report() == 2


def test_stale_while_revalidate__must_not_be_negative():
    with pytest.raises(ValueError, match="stale_while_revalidate"):
        cached(stale_while_revalidate=-1)


def test_cached__works_on_a_cache_without_tags(settings):
    settings.CACHES = {
        **settings.CACHES,
        "plain": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }

    @cached(timeout=30, cache="plain", tags=["x"], stale_while_revalidate=5)
    def report():
        return 3

    assert report() == 3
    assert report() == 3


def test_cached_tags__a_callable_may_take_some_of_the_arguments_by_name_or_none():
    calls = []

    @cached(tags=lambda shop_id: [f"shop.shop:{shop_id}"])
    def top(shop_id, limit=3):
        calls.append(("top", shop_id, limit))
        return list(range(limit))

    @cached(tags=lambda: ["shop.catalogue"])
    def catalogue(shop_id, page):
        calls.append(("catalogue", shop_id, page))
        return [shop_id, page]

    class Shop:
        def __init__(self, pk):
            self.pk = pk

        def __cache_key__(self):
            return self.pk

        @cached(tags=lambda self, day: [f"shop.shop:{self.pk}", f"day:{day}"])
        def revenue(self, day):
            calls.append(("revenue", self.pk, day))
            return 100

    assert top(7, limit=2) == [0, 1] and catalogue(7, 1) == [7, 1]
    assert Shop(7).revenue("mon") == 100
    caches["default"].invalidate_tags("shop.shop:7")
    top(7, limit=2), catalogue(7, 1), Shop(7).revenue("mon")
    caches["default"].invalidate_tags("shop.catalogue")
    top(7, limit=2), catalogue(7, 1), Shop(7).revenue("mon")
    assert calls == [
        ("top", 7, 2),
        ("catalogue", 7, 1),
        ("revenue", 7, "mon"),
        ("top", 7, 2),
        ("revenue", 7, "mon"),
        ("catalogue", 7, 1),
    ]
