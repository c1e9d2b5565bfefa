"""The consistency sampler: sampled get_object hits checked against the database, live.

A stale entry is made on purpose (the row changed by SQL Django never sees, so
nothing invalidates it) and the sampler must report it; real Redis, real
database, the statistics JSON, page and Prometheus reading the counts.
"""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from prometheus_client import CollectorRegistry, generate_latest

from django_tiercache import get_object
from django_tiercache.orm import consistency
from django_tiercache.orm.cache_aside import object_key
from django_tiercache.stats import publishing, recent
from django_tiercache.stats.prometheus import StatsCollector
from tests.test_admin_stats import JSON, PAGE
from tests.testapp.models import Counter, Product
from tests.unseen_sql import unseen_sql

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sampling(settings, shared_redis_url):
    """Every hit sampled, checked at once; the default cache under a prefix of its own."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"cons-{uuid.uuid4().hex[:8]}",
        }
    }
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "CONSISTENCY_SAMPLE_RATE": 1.0,
        "CONSISTENCY_GRACE": 0.0,
    }
    yield
    assert consistency.wait_idle()
    caches["default"].clear()


def figures(client, admin_user):
    client.force_login(admin_user)
    (report,) = client.get(JSON).json()["caches"]
    return report["since_reset"]["consistency"]


def test_consistent_hits__are_counted_as_such(sampling, client, admin_user):
    product = Product.objects.create(name="fine")
    get_object(Product, product.pk)  # a miss: loaded, not sampled
    for _ in range(3):
        get_object(Product, product.pk)  # hits: sampled
    assert consistency.wait_idle()
    assert figures(client, admin_user) == {
        "samples": 3,
        "stale": 0,
        "nines": pytest.approx(0.48, abs=0.01),
        "at_least": True,
    }


def test_a_stale_entry__is_reported_with_its_key(sampling, client, admin_user, caplog):
    product = Product.objects.create(name="cached")
    get_object(Product, product.pk)
    unseen_sql("UPDATE testapp_product SET name = %s WHERE id = %s", ["changed", product.pk])
    assert get_object(Product, product.pk).name == "cached"  # the stale entry, served
    assert consistency.wait_idle()
    found = figures(client, admin_user)
    assert (found["samples"], found["stale"], found["at_least"]) == (1, 1, False)
    assert object_key(Product, product.pk) in caplog.text
    page = client.get(PAGE).content.decode()
    assert "1 stale in 1" in page


def test_an_entry_invalidated_after_the_read__is_consistent(sampling):
    product = Product.objects.create(name="before")
    get_object(Product, product.pk)
    served = get_object(Product, product.pk)
    assert consistency.wait_idle()  # the sampled hit checked before this thread writes
    product.name = "after"
    product.save()  # invalidates: the cache no longer serves the sampled value
    sample = consistency.Sample(
        Product, product.pk, served, object_key(Product, product.pk), "default", 0.0
    )
    assert consistency.check(sample) is True


def test_write_behind_models__are_not_sampled(sampling, journal_prefix):
    row = Counter.objects.create(name="wb")
    get_object(Counter, row.pk)
    get_object(Counter, row.pk)
    assert consistency.wait_idle()
    assert consistency._queue.unfinished_tasks == 0


def test_sampling_off__samples_nothing(settings):
    settings.TIERCACHE = {**settings.TIERCACHE, "CONSISTENCY_SAMPLE_RATE": 0.0}
    product = Product.objects.create(name="off")
    get_object(Product, product.pk)
    get_object(Product, product.pk)
    assert consistency._queue.unfinished_tasks == 0


def test_prometheus__shows_the_samples(sampling):
    product = Product.objects.create(name="p")
    get_object(Product, product.pk)
    get_object(Product, product.pk)
    assert consistency.wait_idle()
    publishing.publish_all()  # as the publishing thread would, every STATS_INTERVAL
    recent.forget()
    registry = CollectorRegistry()
    registry.register(StatsCollector())
    text = generate_latest(registry).decode()
    assert 'tiercache_consistency_samples_total{cache="default",result="ok"} 1.0' in text


@pytest.mark.parametrize(
    "values", [{"CONSISTENCY_SAMPLE_RATE": 2}, {"CONSISTENCY_GRACE": float("nan")}]
)
def test_bad_sampler_settings__are_tiercache_e014(settings, values):
    from django.core.checks import run_checks

    settings.TIERCACHE = {**settings.TIERCACHE, **values}
    assert "tiercache.E014" in [m.id for m in run_checks()]
