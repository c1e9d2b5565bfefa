"""The statistics views while the Redis that holds the shared figures is down.

That is the moment the page exists for: it must answer, say which partitions
are down and show what this process still knows.
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.core.cache import caches
from django.urls import include, path

PAGE = "/admin/django_tiercache/stats/"
JSON = "/admin/django_tiercache/stats.json"
METRICS = "/tiercache/metrics/"
TIERCACHE = "django_tiercache.backend.TierCache"

# This module is the URLconf of its tests: the admin and the app's metrics/ view.
urlpatterns = [
    path("", include("tests.urls")),
    path("tiercache/", include("django_tiercache.urls")),
]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def two_partitions(settings, clean_redis_servers):
    """A cache on two real redis-servers; the first one keeps the shared figures."""
    first, second = clean_redis_servers[:2]
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": [first.url, second.url],
            "KEY_PREFIX": f"outage-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"PARTITION_NAMES": ["first", "second"], "SOCKET_TIMEOUT": 0.5},
        }
    }
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True}
    cache = caches["default"]
    for n in range(6):
        cache.set(f"k{n}", n)
    for n in range(10):
        cache.get(f"k{n}")  # 6 hits, 4 misses, counted in this process
    return first, second


def test_stats_page__renders_when_the_statistics_server_is_down(client, admin_user, two_partitions):
    first, _ = two_partitions
    first.stop()
    client.force_login(admin_user)
    response = client.get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert "Partitions down: first" in page
    assert "this process only" in page
    assert 'data-figure="hits">6<' in page
    assert 'data-figure="misses">4<' in page


def test_stats_json__has_this_process_figures_when_the_statistics_server_is_down(
    client, admin_user, two_partitions
):
    first, _ = two_partitions
    first.stop()
    client.force_login(admin_user)
    response = client.get(JSON)
    assert response.status_code == 200
    (report,) = response.json()["caches"]
    assert report["scope"] == "process"
    assert report["since_reset"]["hits"] == 6
    assert [p["reachable"] for p in report["partitions"]] == [False, True]
    assert report["down"] == ["first"]


def test_metrics__serve_this_process_counters_when_the_statistics_server_is_down(
    client, two_partitions
):
    from prometheus_client.parser import text_string_to_metric_families

    first, _ = two_partitions
    first.stop()
    response = client.get(METRICS)
    assert response.status_code == 200
    samples = [
        s
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    ]

    def value(name, **labels):
        (found,) = [s.value for s in samples if s.name == name and s.labels == labels]
        return found

    assert value("tiercache_process_hits_total", cache="default", tier="redis") == 6
    assert value("tiercache_process_misses_total", cache="default", tier="redis") == 4
    assert value("tiercache_shared_figures_up", cache="default") == 0
    assert value("tiercache_partition_up", cache="default", partition="first") == 0
    assert value("tiercache_partition_up", cache="default", partition="second") == 1


def test_stats_page__calls_a_breaker_past_its_cooldown_half_open_not_closed(
    client, admin_user, settings, clean_redis_servers
):
    """A partition down for longer than the breaker's cool-down: the next call would
    probe it, but it has not answered since it failed, so "closed" would be wrong."""
    first, second = clean_redis_servers[:2]
    options = {"PARTITION_NAMES": ["first", "second"], "BREAKER_FAILURES": 1}
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": [first.url, second.url],
            "KEY_PREFIX": f"outage-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {**options, "BREAKER_COOLDOWN": 0.3, "SOCKET_TIMEOUT": 0.5},
        }
    }
    cache = caches["default"]
    on_second = next(
        k
        for k in (f"k{n}" for n in range(50))
        if cache._partition(cache.make_key(k)).name == "second"
    )
    client.force_login(admin_user)
    closed = '<td data-label="breaker">closed</td>'
    assert client.get(PAGE).content.decode().count(closed) == 2
    second.stop()
    assert cache.get(on_second) is None  # refused: the breaker opens
    time.sleep(0.4)
    page = client.get(PAGE).content.decode()
    assert page.count(closed) == 1  # the first partition's
    assert '<td data-label="breaker"><span class="tc-badge tc-warn">half-open</span></td>' in page
    (report,) = client.get(JSON).json()["caches"]
    assert [p["breaker"] for p in report["partitions"]] == ["closed", "half-open"]
