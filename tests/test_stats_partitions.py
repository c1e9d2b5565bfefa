"""What the page says about each partition's server: eviction policy, persistence, clock."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache import caches
from django.urls import include, path

from django_tiercache.stats import advice, publishing, recent

PAGE = "/admin/django_tiercache/stats/"
JSON = "/admin/django_tiercache/stats.json"
METRICS = "/tiercache/metrics/"
TIERCACHE = "django_tiercache.backend.TierCache"
POLICIES = ["noeviction", "allkeys-lru", "volatile-lru"]

urlpatterns = [
    path("", include("tests.urls")),
    path("tiercache/", include("django_tiercache.urls")),
]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def configured_servers(settings, clean_redis_servers):
    """Three partitions, one per eviction policy; the last one also snapshots (RDB)."""
    servers = clean_redis_servers[:3]
    for server, policy in zip(servers, POLICIES, strict=True):
        with server.client() as client:
            client.config_set("maxmemory-policy", policy)
    with servers[2].client() as client:
        client.config_set("save", "900 1")
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": [server.url for server in servers],
            "KEY_PREFIX": f"config-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"PARTITION_NAMES": POLICIES},
        }
    }
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True}
    caches["default"].set("k", 1)
    yield servers
    for server in servers:  # the servers outlive the test: give them their start-up config
        with server.client() as client:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("save", "")


def test_eviction_warning__names_what_each_policy_family_weakens():
    assert "cache writes fail" in advice.eviction_warning("noeviction")
    for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
        assert "may evict invalidation metadata" in advice.eviction_warning(policy)
    for policy in ("volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random", None):
        assert advice.eviction_warning(policy) is None


def test_partitions__show_policy_persistence_and_a_warning_per_partition(
    client, admin_user, configured_servers
):
    client.force_login(admin_user)
    (report,) = client.get(JSON).json()["caches"]
    rows = {p["name"]: p for p in report["partitions"]}
    assert [rows[name]["maxmemory_policy"] for name in POLICIES] == POLICIES
    assert rows["noeviction"]["policy_warning"] == advice.eviction_warning("noeviction")
    assert rows["allkeys-lru"]["policy_warning"] == advice.eviction_warning("allkeys-lru")
    assert rows["volatile-lru"]["policy_warning"] is None
    assert rows["noeviction"]["persistence"] == {"rdb": "off", "aof": False, "config_allowed": True}
    assert rows["volatile-lru"]["persistence"]["rdb"] == "900 1"

    page = client.get(PAGE).content.decode()
    assert page.count('data-advice="policy"') == 2
    assert "RDB save 900 1, AOF off" in page
    assert "RDB off, AOF off" in page


def test_metrics__expose_each_partition_policy_and_persistence(client, configured_servers):
    from prometheus_client.parser import text_string_to_metric_families

    publishing.publish_all()
    recent.forget()
    text = client.get(METRICS).content.decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    configs = {
        s.labels["partition"]: s.labels
        for s in samples
        if s.name == "tiercache_partition_config_info"
    }
    assert {name: configs[name]["maxmemory_policy"] for name in POLICIES} == dict(
        zip(POLICIES, POLICIES, strict=True)
    )
    assert configs["volatile-lru"]["rdb"] == "900 1"
    assert configs["noeviction"]["aof"] == "off"


# -- clocks --


def test_clock_skew__is_measured_against_each_server(client, admin_user, configured_servers):
    client.force_login(admin_user)
    (report,) = client.get(JSON).json()["caches"]
    for partition in report["partitions"]:
        # Same host, same clock: what is measured is the uncertainty of the round trip.
        assert abs(partition["clock_skew_s"]) <= partition["clock_uncertainty_s"] + 0.01
        assert partition["clock_warning"] is None
    assert "clock skew" in client.get(PAGE).content.decode()


def test_clock_warning__past_one_second_says_what_depends_on_the_clock():
    assert advice.skew_warning(0.9) is None
    assert advice.skew_warning(-0.2) is None
    warning = advice.skew_warning(-1.5)
    assert "-1.5 s" in warning
    assert "correctness does not depend on it" in warning
    assert "minute buckets" in warning
