"""The Prometheus view of django_tiercache.urls: what it serves, to whom, at what cost."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import caches
from django.urls import include, path

from django_tiercache.stats import publishing, recent

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TIERCACHE = "django_tiercache.backend.TierCache"
METRICS = "/tiercache/metrics/"

# This module is the URLconf of its tests: the project includes the app's URLs.
urlpatterns = [path("tiercache/", include("django_tiercache.urls"))]
pytestmark = pytest.mark.urls(__name__)


@pytest.fixture
def cache(settings, shared_redis_url):
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True}
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"prom-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"PARTITION_NAMES": ["main"]},
        }
    }
    yield caches["default"]
    caches["default"].clear()


def scrape(client, **headers):
    """Every sample of the exposition, parsed by prometheus_client's own parser.

    A scrape reads what the processes published (the background thread does it
    every STATS_INTERVAL); here this process publishes at once, and the figures
    kept from an earlier scrape are dropped.
    """
    publishing.publish_all()
    recent.forget()
    response = client.get(METRICS, **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = text_string_to_metric_families(response.content.decode())
    return [s for family in families for s in family.samples]


def value(samples, name, **labels):
    (found,) = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


def test_metrics__count_hits_misses_sets_and_invalidations(client, cache):
    cache.set_many({"a": 1, "b": 2})
    cache.get_many(["a", "b", "c"])
    cache.invalidate_tags("shop.product:1", "shop.product:2")
    samples = scrape(client)
    assert value(samples, "tiercache_hits_total", cache="default", tier="redis") == 2
    assert value(samples, "tiercache_misses_total", cache="default", tier="redis") == 1
    assert value(samples, "tiercache_sets_total", cache="default", tier="redis") == 2
    prefix = {"cache": "default", "prefix": "shop.product"}
    assert value(samples, "tiercache_invalidations_total", **prefix) == 2


def test_metrics__have_a_latency_histogram_per_operation(client, cache):
    for n in range(10):
        cache.get(f"k{n}")
    samples = scrape(client)
    labels = {"cache": "default", "partition": "main", "operation": "read"}
    histogram = "tiercache_operation_duration_seconds"
    assert value(samples, f"{histogram}_count", **labels) == 10
    assert value(samples, f"{histogram}_bucket", le="+Inf", **labels) == 10
    assert 0 < value(samples, f"{histogram}_sum", **labels) < 10
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in samples
        if s.name == f"{histogram}_bucket" and s.labels["operation"] == "read"
    ]
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert [le for le, _ in buckets] == sorted(le for le, _ in buckets)
    assert buckets[0][1] < 10  # not every read took under 8 µs


def test_metrics__describe_each_partition(client, cache):
    cache.set("a", 1)
    samples = scrape(client)
    main = {"cache": "default", "partition": "main"}
    assert value(samples, "tiercache_partition_up", **main) == 1
    assert value(samples, "tiercache_partition_keys", **main) >= 1
    assert value(samples, "tiercache_partition_memory_used_bytes", **main) > 0


# -- who may scrape --


def test_metrics__are_closed_to_anonymous_requests_by_default(client, cache, settings):
    settings.TIERCACHE = {}
    response = client.get(METRICS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"tiercache_" not in response.content


def test_metrics__want_the_token_when_one_is_set(client, cache, settings):
    settings.TIERCACHE = {"STATS_METRICS_TOKEN": "s3cret"}
    assert client.get(METRICS).status_code == 401
    assert client.get(METRICS, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")


@pytest.mark.django_db
def test_metrics__open_to_a_logged_in_user_who_may_view_the_statistics(
    client, cache, settings, django_user_model
):
    settings.TIERCACHE = {}
    user = django_user_model.objects.create_user("ops", password="pw")
    client.force_login(user)
    assert client.get(METRICS).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_cachestats"))
    client.force_login(django_user_model.objects.get(pk=user.pk))  # permissions are cached
    scrape(client)


def test_metrics__refuse_post(client, cache):
    assert client.post(METRICS).status_code == 405


def test_metrics__still_answer_when_a_cache_is_down(client, settings, closed_port_url):
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True}
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": closed_port_url,
            "OPTIONS": {"PARTITION_NAMES": ["down"]},
        }
    }
    caches["default"].get("k")  # counted, but its figures cannot be published
    samples = scrape(client)
    assert value(samples, "tiercache_partition_up", cache="default", partition="down") == 0


@pytest.mark.parametrize(
    ("key", "value"),
    [("STATS_METRICS_PUBLIC", "yes"), ("STATS_METRICS_TOKEN", ""), ("STATS_INTERVAL", 0)],
)
def test_bad_statistics_settings__are_tiercache_e006_with_a_hint(settings, key, value):
    from django_tiercache.checks import check_app_settings

    settings.TIERCACHE = {key: value}
    (message,) = check_app_settings()
    assert message.id == "tiercache.E006"
    assert key in message.msg and message.hint
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True, "STATS_METRICS_TOKEN": "t"}
    assert check_app_settings() == []
