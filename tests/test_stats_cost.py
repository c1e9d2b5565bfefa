"""What reading the statistics costs Redis, counted by the server itself (INFO commandstats).

The README's "What reading the statistics costs" quotes these counts.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from django.core.cache import caches
from django.urls import include, path

from django_tiercache.stats import publishing, recent
from tests.redis_servers import SHARED_REDIS_URL

PAGE = "/admin/django_tiercache/stats/"
JSON = "/admin/django_tiercache/stats.json"
METRICS = "/tiercache/metrics/"
TIERCACHE = "django_tiercache.backend.TierCache"
# Sent when a connection opens, not by the statistics.
HANDSHAKE = {"client|setinfo", "hello", "auth", "select"}

urlpatterns = [
    path("", include("tests.urls")),
    path("tiercache/", include("django_tiercache.urls")),
]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def server(settings, clean_redis_servers, monkeypatch):
    """A cache on a server of its own, so every command the server counts is the test's."""
    server = clean_redis_servers[0]
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": server.url,
            "KEY_PREFIX": f"cost-{uuid.uuid4().hex[:8]}",
        }
    }
    # The write-behind journal (the test app has a write-behind model) on another
    # server: what is counted here is the statistics' cost alone.
    settings.TIERCACHE = {
        "STATS_METRICS_PUBLIC": True,
        "WRITE_BEHIND": {"REDIS_URL": SHARED_REDIS_URL},
    }
    cache = caches["default"]
    cache.set("k", 1)
    cache.get("k")
    publishing.publish_all()
    recent.forget()
    # The background publication (every STATS_INTERVAL) sends a batch for every cache
    # this process ever counted, earlier tests' caches on this server included: once
    # in a CI run it fell inside a measurement (5 EVALSHA instead of the page's 1).
    # What is measured here is what a request costs, so it is kept out: a loop
    # already under way stops too (publish_all looks publish up at each recorder),
    # and the publication it may be in the middle of is waited for (once more in a
    # CI run: an EVALSHA, an HGET and two HSETs in the scrape's count).
    monkeypatch.setattr(publishing, "publish_all", lambda: None)
    monkeypatch.setattr(publishing, "publish", lambda recorder: None)
    with publishing._registered_lock:
        recorders = list(publishing._registered)
    for recorder in recorders:
        with recorder.publish_lock:
            pass
    return server


def commands_during(server, action) -> Counter:
    """The commands the server ran while action() ran, by name."""
    with server.client() as client:
        before = client.info("commandstats")
        action()
        after = client.info("commandstats")
    ran = Counter()
    for name, stats in after.items():
        command = name.removeprefix("cmdstat_")
        calls = stats["calls"] - before.get(name, {}).get("calls", 0)
        if calls and command not in HANDSHAKE:
            ran[command] = calls
    ran["info"] -= 1  # the first INFO commandstats above
    return +ran


def test_scrape__reads_the_totals_and_probes_the_partition_without_writing(client, server):
    ran = commands_during(server, lambda: client.get(METRICS))
    assert ran == Counter({"hgetall": 1, "info": 1, "time": 1, "config|get": 1})


def test_scrapes__within_stats_interval_cost_redis_nothing(client, server):
    client.get(METRICS)
    assert commands_during(server, lambda: [client.get(METRICS) for _ in range(10)]) == Counter()


def test_json__within_stats_interval_costs_redis_nothing(client, admin_user, server):
    client.force_login(admin_user)
    first = commands_during(server, lambda: client.get(JSON))
    assert first["evalsha"] == 1  # this process publishes, once, before reading
    assert commands_during(server, lambda: [client.get(JSON) for _ in range(10)]) == Counter()


def test_stats_page__publishes_once_and_reads_the_hour(client, admin_user, server):
    client.force_login(admin_user)
    ran = commands_during(server, lambda: client.get(PAGE))
    assert ran["evalsha"] == 1
    assert ran["hgetall"] == 1 + 60 + 1  # totals, one hash a minute, processes
    assert "exec" not in ran  # one script call, no MULTI/EXEC
