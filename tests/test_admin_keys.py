"""The admin's key browser: who sees it, what it shows, what it never does."""

from __future__ import annotations

import os
import pickle
import uuid

import pytest
import redis
from django.contrib.admin.models import LogEntry
from django.core.cache import caches
from django.test import Client

from tests import redis_servers as servers_module
from tests.admin_support import make_user, use_tiercache

KEYS = "/admin/django_tiercache/stats/keys/"
DELETE = "/admin/django_tiercache/stats/keys/delete/"

pytestmark = pytest.mark.django_db

UNPICKLED: list[str] = []  # what a planted pickle would append to, if it were loaded


def _planted() -> str:
    UNPICKLED.append("planted")
    return "planted"


class Planted:
    def __reduce__(self):
        return (_planted, ())


@pytest.fixture
def cache(settings, shared_redis_url):
    yield use_tiercache(settings, shared_redis_url, "keys")
    caches["default"].clear()


def page(client, **query) -> str:
    response = client.get(KEYS, {"cache": "default", **query})
    assert response.status_code == 200
    return response.content.decode()


def test_keys_page__needs_the_view_permission(client, django_user_model, viewer, cache):
    assert client.get(KEYS).status_code == 302  # to the admin's login
    client.force_login(make_user(django_user_model, "staff"))
    assert client.get(KEYS).status_code == 403
    client.force_login(viewer)
    assert client.get(KEYS).status_code == 200


def test_keys_page__lists_what_matches_with_its_time_left_tags_and_state(client, viewer, cache):
    cache.set("product:1", {"name": "lamp"}, timeout=300, tags=["shop.product"])
    cache.set("product:2", "forever", timeout=None)
    cache.set("stale", "old", tags=["gone"])
    cache.set("other", 1)
    cache.invalidate_tags("gone")
    client.force_login(viewer)
    shown = page(client)
    for key in ("product:1", "product:2", "stale", "other"):
        assert f"<code>{key}</code>" in shown
    assert "<code>shop.product</code>" in shown
    assert "300 s" in shown or "299 s" in shown
    assert "never expires" in shown
    row = shown[shown.index("<code>stale</code>") :]
    assert row[: row.index("</tr>")].count("invalidated") == 1
    narrowed = page(client, pattern="product:*")
    assert "<code>product:1</code>" in narrowed and "<code>other</code>" not in narrowed


def test_values__are_shown_only_to_who_may_act_on_caches(client, viewer, operator, cache):
    cache.set("product:1", {"name": "a lamp of note"}, tags=["shop.product"])
    client.force_login(viewer)
    assert "a lamp of note" not in page(client)
    client.force_login(operator)
    assert "{&#x27;name&#x27;: &#x27;a lamp of note&#x27;}" in page(client)


def test_bytes_this_site_did_not_sign__are_never_unpickled(
    client, operator, cache, shared_redis_url
):
    made = cache.make_key("planted")
    forged = b"v" + os.urandom(16) + pickle.dumps(Planted())  # a MAC nobody can check
    redis.Redis.from_url(shared_redis_url).set(made, forged)
    client.force_login(operator)
    shown = page(client)
    assert "<code>planted</code>" in shown
    assert "not signed by this site: not decoded" in shown
    assert UNPICKLED == []


def test_keys_tags_and_values__are_escaped(client, operator, cache):
    cache.set("<script>alert(1)</script>", "<b>bold</b>", tags=["<i>tag</i>"])
    client.force_login(operator)
    shown = page(client)
    assert "<script>alert(1)</script>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown
    assert "<b>bold</b>" not in shown and "<i>tag</i>" not in shown


def test_delete__is_a_post_with_csrf_and_the_change_permission(client, viewer, operator, cache):
    cache.set("doomed", "here", tags=["t"])
    cache.set("kept", "here")
    data = {"cache": "default", "pattern": "*", "key": ["doomed"]}
    client.force_login(operator)
    assert client.get(DELETE, data).status_code == 405
    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(operator)
    assert guarded.post(DELETE, data).status_code == 403  # no CSRF token
    client.force_login(viewer)
    assert client.post(DELETE, data).status_code == 403
    assert cache.get("doomed") == "here"
    client.force_login(operator)
    response = client.post(DELETE, data)  # first the question, naming the keys
    assert response.status_code == 200
    assert "<li><code>doomed</code></li>" in response.content.decode()
    assert cache.get("doomed") == "here"
    response = client.post(DELETE, {**data, "confirmed": "yes"})
    assert response.status_code == 302 and response["Location"].startswith(KEYS)
    assert cache.get("doomed") is None
    assert cache.get("kept") == "here"
    logged = LogEntry.objects.get(user=operator)
    assert logged.get_change_message() == "Deleted 1 key from cache 'default': doomed."


def test_delete__names_the_keys_in_the_history_and_counts_past_twenty(client, operator, cache):
    doomed = [f"doomed:{i:02d}" for i in range(22)]
    cache.set_many(dict.fromkeys(doomed, 1))
    client.force_login(operator)
    client.post(DELETE, {"cache": "default", "pattern": "*", "key": doomed, "confirmed": "yes"})
    logged = LogEntry.objects.get(user=operator).get_change_message()
    assert logged.startswith("Deleted 22 keys from cache 'default': doomed:00, doomed:01,")
    assert logged.endswith("doomed:19 and 2 more.")


def test_delete__counts_the_keys_that_existed(client, operator, cache):
    cache.set_many({"here:1": 1, "here:2": 2})
    client.force_login(operator)
    checked = ["here:1", "here:2", "gone:3"]
    data = {"cache": "default", "pattern": "*", "key": checked, "confirmed": "yes"}
    response = client.post(DELETE, data, follow=True)
    told = [str(m) for m in response.context["messages"]]
    assert told == [
        "Deleted 2 of the 3 checked keys (the others were gone already) from cache 'default': "
        "here:1, here:2, gone:3."
    ]
    assert cache.get("here:1") is None and cache.get("here:2") is None


def test_delete__the_question_escapes_the_keys_and_keeps_them_for_the_answer(
    client, operator, cache
):
    key = "<b>k</b>"
    cache.set(key, "here")
    client.force_login(operator)
    shown = client.post(DELETE, {"cache": "default", "pattern": "*", "key": [key]}).content
    shown = shown.decode()
    assert "<b>k</b>" not in shown
    assert '<input type="hidden" name="key" value="&lt;b&gt;k&lt;/b&gt;">' in shown
    assert 'name="confirmed" value="yes"' in shown
    assert cache.get(key) == "here"


def test_an_unreachable_partition__is_reported_and_the_others_listed(
    client, viewer, settings, shared_redis_url, closed_port_url
):
    cache = use_tiercache(settings, [shared_redis_url, closed_port_url], "keys")
    healthy = [f"k{i}" for i in range(40) if cache.partition_for(f"k{i}") != closed_port_url]
    for key in healthy[:3]:
        cache.set(key, "v")
    client.force_login(viewer)
    shown = page(client)
    assert "Unreachable: " in shown
    for key in healthy[:3]:
        assert f"<code>{key}</code>" in shown
    cache.delete_many(healthy[:3])


def test_a_partition_restarted_without_the_functions__is_listed_not_called_unreachable(
    client, viewer, settings, tmp_path
):
    """The first call after a restart greets a server that has no Functions yet:
    the greeting fails and loads them. The browser's SCAN, a read, is sent again.
    On a server of its own: the session's servers' pools are left as they were."""
    server = servers_module.RedisServer(servers_module.free_port(), tmp_path / "restarted")
    servers_module.start_on_a_free_port(server)
    try:
        cache = use_tiercache(settings, server.url, "keys")
        cache.set("before", 1)  # greeted, the Functions loaded
        server.stop()
        server.start()  # empty: no Functions
        server.client().set(cache.make_key("planted"), b"raw")  # a plain client: no greeting
        client.force_login(viewer)
        shown = page(client)
        assert "Unreachable" not in shown
        assert "<code>planted</code>" in shown
    finally:
        cache.close()
        server.stop()


def test_more_matches_than_listed__are_said_above_the_list(client, viewer, cache):
    cache.set_many({f"many:{i:03d}": i for i in range(101)})
    client.force_login(viewer)
    shown = page(client, pattern="many:*")
    assert shown.count("<code>many:") == 100
    note = shown.index("More keys match on this partition than the 100 listed")
    assert note < shown.index("<code>many:")


def test_an_unknown_cache__is_named_as_unknown(client, viewer, cache):
    client.force_login(viewer)
    shown = page(client, cache="<b>nope")
    assert "No TierCache cache is named <code>&lt;b&gt;nope</code>." in shown
    assert "No TierCache cache is configured" not in shown


def test_a_memory_cache__is_browsed_too(client, viewer, settings):
    cache = use_tiercache(settings, f"memory://{uuid.uuid4().hex}", "keys")
    cache.set("local", "v", tags=["t"])
    client.force_login(viewer)
    shown = page(client)
    assert "<code>local</code>" in shown and "<code>t</code>" in shown


def test_the_statistics_page__links_to_the_keys(client, viewer, cache):
    client.force_login(viewer)
    assert f'href="{KEYS}"' in client.get("/admin/django_tiercache/stats/").content.decode()


def test_a_cluster__is_browsed_group_by_group(client, viewer, settings, clean_redis_cluster):
    cache = use_tiercache(settings, clean_redis_cluster.url(), "keys")
    cache.set_many({f"product:{i}": i for i in range(20)}, tags=["shop.product"])
    client.force_login(viewer)
    shown = page(client, pattern="product:*")
    assert shown.count("<h2>Partition") == 8  # the slot groups
    for i in range(20):
        assert f"<code>product:{i}</code>" in shown
    assert "Unreachable" not in shown
