"""The admin's "Cache statistics" page: where it is, who sees it, what its actions do."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.cache import caches
from django.core.management import call_command

from django_tiercache.stats import actions
from tests.admin_support import TIERCACHE, make_user, use_tiercache

PAGE = "/admin/django_tiercache/stats/"
JSON = "/admin/django_tiercache/stats.json"
ACT = "/admin/django_tiercache/stats/act/"

pytestmark = pytest.mark.django_db


@pytest.fixture
def cache(settings, shared_redis_url):
    """The default cache, under a key prefix of its own so that its statistics start empty."""
    yield use_tiercache(settings, shared_redis_url, "stats")
    caches["default"].clear()


def act(client, action, **data):
    return client.post(ACT, {"action": action, "cache": "default", **data})


# -- where it is --


def test_admin_index__lists_cache_statistics_under_the_app(client, admin_user, cache):
    client.force_login(admin_user)
    page = client.get("/admin/").content.decode()
    app_section = page[page.index('class="app-django_tiercache') :]
    assert f'<a href="{PAGE}"' in app_section
    assert "Cache statistics" in app_section


def test_stats_page__extends_the_admin_base_template(client, admin_user, cache):
    client.force_login(admin_user)
    response = client.get(PAGE)
    assert response.status_code == 200
    assert "admin/base_site.html" in [t.name for t in response.templates]
    assert 'id="site-name"' in response.content.decode()


# -- who sees it --


@pytest.mark.parametrize("url", [PAGE, JSON])
def test_stats_views__send_anonymous_users_to_the_login_page(client, cache, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/admin/login/?next={url}")


@pytest.mark.parametrize("url", [PAGE, JSON])
def test_stats_views__refuse_staff_without_the_permission(client, staff, cache, url):
    client.force_login(staff)
    assert client.get(url).status_code == 403


def test_stats_views__send_non_staff_users_to_the_login_page(client, django_user_model, cache):
    user = make_user(django_user_model, "customer", "view_cachestats", staff=False)
    client.force_login(user)
    assert client.get(PAGE).status_code == 302


def test_a_cache_with_bad_settings__is_shown_with_what_is_wrong(client, viewer, cache, settings):
    """Not as "statistics off", and the other caches are shown as usual."""
    settings.CACHES = {
        **settings.CACHES,
        "bad": {"BACKEND": TIERCACHE, "LOCATION": "memory://b", "OPTIONS": {"SOCKET_TIMEOUT": 0}},
    }
    client.force_login(viewer)
    bad, default = (
        next(r for r in client.get(JSON).json()["caches"] if r["alias"] == alias)
        for alias in ("bad", "default")
    )
    assert bad["error"].startswith("This cache cannot be built: tiercache.E003: ")
    assert "SOCKET_TIMEOUT" in bad["error"] and bad["unbuilt"] and bad["partitions"] == []
    assert "error" not in default
    page = client.get(PAGE).content.decode()
    assert "This cache cannot be built: tiercache.E003: OPTIONS[&#x27;SOCKET_TIMEOUT&#x27;]" in page


def test_stats_page__shows_the_figures_without_actions_to_a_viewer(client, viewer, cache):
    cache.set("a", 1)
    cache.get("a")
    cache.get("missing")
    client.force_login(viewer)
    page = client.get(PAGE).content.decode()
    assert 'data-figure="hits">1<' in page
    assert 'data-figure="misses">1<' in page
    assert "<svg" in page and 'class="dot"' in page  # this minute, in the charts
    assert ACT not in page  # no action forms without the change permission
    assert "Processes that sent counts: 1 in the last 15.0 s" in page
    assert "publishing now" not in page


def test_stats_page__shows_tagged_writes_a_partition_refused(
    client, viewer, cache, shared_redis_url
):
    """A partition that lost its meta hash refuses tagged writes for the lock
    horizon: the page counts them as "refused", beside the other events."""
    from django_tiercache.storage.hooks import declare_lock_horizon

    cache.get("greeting")
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", 30)
    redis.Redis.from_url(shared_redis_url).delete(f"{cache.key_prefix}:_tc:meta")
    assert cache.set("tagged", 1, tags=["t"]) is False
    client.force_login(viewer)
    page = client.get(PAGE).content.decode()
    row = page[page.index("<td>refused</td>") :]
    assert row.index('class="num">1<') < row.index("</tr>")


def test_stats_page__shows_the_actions_to_an_operator(client, operator, cache):
    client.force_login(operator)
    page = client.get(PAGE).content.decode()
    assert page.count(f'action="{ACT}"') == len(actions.available())
    assert "csrfmiddlewaretoken" in page
    assert 'placeholder="app.model:42 another-tag"' in page  # not the example shop's tags
    assert 'id="write-behind"' in page  # the test app registers a write-behind model


def test_stats_json__has_the_same_figures_for_a_viewer(client, viewer, cache):
    cache.set("a", 1)
    cache.get("a")
    client.force_login(viewer)
    response = client.get(JSON)
    assert response["Content-Type"] == "application/json"
    (report,) = response.json()["caches"]
    assert report["alias"] == "default"
    assert report["since_reset"]["hits"] == 1
    assert report["since_reset"]["sets"] == 1
    assert report["partitions"][0]["reachable"] is True


# -- actions --


def test_action__is_refused_to_a_viewer_and_does_nothing(client, viewer, cache):
    cache.set("k", "v", tags=["shop.product:1"])
    client.force_login(viewer)
    assert act(client, "invalidate_tags", tags="shop.product:1").status_code == 403
    assert cache.get("k") == "v"
    assert not LogEntry.objects.exists()


def test_action__refuses_get(client, operator, cache):
    client.force_login(operator)
    assert client.get(ACT, {"action": "reset_statistics", "cache": "default"}).status_code == 405


def test_action__refuses_a_post_without_csrf_token(operator, cache):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert act(client, "reset_statistics").status_code == 403
    assert not LogEntry.objects.exists()


def test_action_invalidate_tags__invalidates_them_and_logs_it(client, operator, cache):
    cache.set("product", "p", tags=["shop.product:1"])
    cache.set("other", "o", tags=["shop.product:2"])
    client.force_login(operator)
    response = act(client, "invalidate_tags", tags="shop.product:1, shop.category:9")
    assert response.status_code == 302 and response["Location"] == PAGE
    assert cache.get("product") is None
    assert cache.get("other") == "o"
    entry = LogEntry.objects.get()
    assert entry.user == operator
    assert entry.object_id == "default"
    assert "shop.product:1" in entry.get_change_message()
    page = client.get(PAGE).content.decode()
    assert "Invalidated 2 tag(s)" in page  # the admin message, and the recent actions


def test_action_invalidate_tags__rejects_bad_tags_and_logs_nothing(client, operator, cache):
    client.force_login(operator)
    response = act(client, "invalidate_tags", tags="x" * 300)
    page = client.get(response["Location"]).content.decode()
    assert "Invalidate tags: A tag must have 1 to 200 characters" in page
    assert not LogEntry.objects.exists()


def test_action__rejects_an_unknown_cache(client, operator, cache):
    client.force_login(operator)
    client.post(ACT, {"action": "reset_statistics", "cache": "nope"})
    assert not LogEntry.objects.exists()


def test_action_reset_statistics__starts_the_figures_from_zero_and_logs_it(client, operator, cache):
    cache.set("a", 1)
    cache.get("a")
    client.force_login(operator)
    assert client.get(JSON).json()["caches"][0]["since_reset"]["hits"] == 1
    act(client, "reset_statistics")
    report = client.get(JSON).json()["caches"][0]
    assert report["since_reset"]["hits"] == 0
    assert report["last_hour"]["sets"] == 0
    assert report["reset_at"] is not None
    assert "Reset the statistics" in LogEntry.objects.get().get_change_message()


def test_action_run_warmer__runs_it_and_logs_its_summary(client, operator, cache):
    warming = pytest.importorskip("django_tiercache.warming")

    def items():
        yield from ((f"warm:{i}", i) for i in range(3))

    warming.warmer("stats-page-test")(items)
    try:
        client.force_login(operator)
        assert "stats-page-test" in client.get(PAGE).content.decode()
        act(client, "run_warmer", warmer="stats-page-test")
    finally:
        warming.unregister_warmer("stats-page-test")
    assert cache.get_many(["warm:0", "warm:1", "warm:2"]) == {"warm:0": 0, "warm:1": 1, "warm:2": 2}
    message = LogEntry.objects.get().get_change_message()
    assert "Ran warmer 'stats-page-test'" in message and "3 warmed" in message


def test_action_run_warmer__refuses_an_unknown_warmer(client, operator, cache):
    pytest.importorskip("django_tiercache.warming")
    client.force_login(operator)
    act(client, "run_warmer", warmer="no-such-warmer")
    assert not LogEntry.objects.exists()


def test_run_warmer__is_not_offered_without_the_warming_module(
    client, operator, cache, monkeypatch
):
    monkeypatch.setattr(actions, "_warming", lambda: None)
    client.force_login(operator)
    assert "Run a warmer" not in client.get(PAGE).content.decode()
    act(client, "run_warmer", warmer="anything")
    assert not LogEntry.objects.exists()


# -- escaping --


def test_stats_page__escapes_tags_partition_names_and_messages(client, operator, settings, cache):
    script = "<script>alert(1)</script>"
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": f"memory://{uuid.uuid4().hex}",
            "OPTIONS": {"PARTITION_NAMES": [f"{script}partition"]},
        }
    }
    caches["default"].invalidate_tags(f"{script}:1")
    client.force_login(operator)
    act(client, "invalidate_tags", tags=f"{script}:2")
    page = client.get(PAGE).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;partition" in page  # the partition table
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in page  # tag prefixes
    assert "&lt;script&gt;alert(1)&lt;/script&gt;:2" in page  # the message and the history
    report = client.get(JSON).json()["caches"][0]
    assert report["invalidations"] == [{"prefix": script, "count": 2}]


# -- the model --


def test_stats_model__needs_no_migration():
    call_command("makemigrations", "django_tiercache", "--check", "--dry-run", verbosity=0)


def test_stats_model__has_the_permissions_the_page_checks():
    codenames = set(
        Permission.objects.filter(content_type__app_label="django_tiercache").values_list(
            "codename", flat=True
        )
    )
    assert {"view_cachestats", "change_cachestats"} <= codenames


def test_stats_json__is_valid_json_for_every_alias(client, admin_user, settings, cache):
    settings.CACHES = {
        **settings.CACHES,
        "local": {"BACKEND": TIERCACHE, "LOCATION": f"memory://{uuid.uuid4().hex}"},
        "other": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    caches["local"].set("x", 1)
    client.force_login(admin_user)
    reports = json.loads(client.get(JSON).content)["caches"]
    assert [r["alias"] for r in reports] == ["default", "local"]
    assert reports[1]["shared"] is False
    assert reports[1]["since_reset"]["sets"] == 1
