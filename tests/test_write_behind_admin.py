"""Write-behind on the admin statistics page, its JSON and Prometheus: figures and actions."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.core.cache import caches
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_tiercache import write_behind
from django_tiercache.stats import publishing, recent
from django_tiercache.stats.prometheus import StatsCollector
from tests.admin_support import make_user
from tests.test_admin_stats import ACT, JSON, PAGE
from tests.test_write_behind_failures import clashing_batch
from tests.testapp.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def dead_letter(settings, shared_redis_url, journal_prefix):
    """One dead letter (a unique-name clash) and one row pending, on a cache of the test's own."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"wbadmin-{uuid.uuid4().hex[:8]}",
        }
    }
    a, b, _ = clashing_batch()
    for _ in range(3):
        write_behind.flush()
    a.hits = 11
    write_behind.save(a)
    recent.forget()
    yield a, b
    caches["default"].clear()


def test_page__shows_the_figures_and_the_dead_letters_error(client, admin_user, dead_letter):
    client.force_login(admin_user)
    page = client.get(PAGE).content.decode()
    section = page[page.index('id="write-behind"') :]
    assert 'data-figure="pending">1<' in section
    assert 'data-figure="dead_letters">1<' in section
    assert "IntegrityError" in section and f"testapp.counter:{dead_letter[1].pk}" in section
    assert 'value="Flush write-behind"' in section


def test_actions__flush_retry_drop_are_logged_and_need_change_permission(
    client, admin_user, django_user_model, dead_letter
):
    viewer = make_user(django_user_model, "viewer", "view_cachestats")
    client.force_login(viewer)
    assert client.post(ACT, {"action": "flush_write_behind", "cache": "default"}).status_code == 403
    assert 'value="Flush write-behind"' not in client.get(PAGE).content.decode()
    client.force_login(admin_user)
    client.post(ACT, {"action": "flush_write_behind", "cache": "default"})
    assert Counter.objects.get(pk=dead_letter[0].pk).hits == 11
    client.post(ACT, {"action": "retry_dead_letters", "cache": "default"})
    assert write_behind.stats()["dead_letters"] == 0 and write_behind.stats()["pending"] == 1
    write_behind.flush()
    for _ in range(2):
        write_behind.flush()
    client.post(ACT, {"action": "drop_dead_letters", "cache": "default"})
    assert write_behind.stats()["dead_letters"] == 0
    messages = [e.get_change_message() for e in LogEntry.objects.order_by("action_time")]
    assert [m.split(":")[0] for m in messages] == ["Write-behind"] * 3
    assert "1 row written" in messages[0] and "1 dead letter dropped" in messages[2]


def test_json_and_prometheus__show_the_same_figures(client, admin_user, dead_letter):
    client.force_login(admin_user)
    figures = client.get(JSON).json()["write_behind"]
    assert (figures["pending"], figures["dead_letters"], figures["up"]) == (1, 1, True)
    publishing.publish_all()
    recent.forget()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector())  # what the metrics/ view serves
    text = generate_latest(registry).decode()
    samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples["tiercache_write_behind_pending"] == 1
    assert samples["tiercache_write_behind_dead_letters"] == 1
    assert samples["tiercache_write_behind_failed_total"] == 3
