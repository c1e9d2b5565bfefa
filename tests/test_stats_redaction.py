"""No view and no log of the statistics shows a Redis password, in any URL form."""

from __future__ import annotations

import logging
import uuid

import pytest
from django.core.cache import caches
from django.urls import include, path

from django_tiercache.hotkeys.record import record_of
from django_tiercache.stats import publishing, recent
from django_tiercache.stats.redaction import redact_text
from django_tiercache.storage.options import redact

PAGE = "/admin/django_tiercache/stats/"
JSON = "/admin/django_tiercache/stats.json"
METRICS = "/tiercache/metrics/"
TIERCACHE = "django_tiercache.backend.TierCache"
SECRET = "pw-7f3a9c"  # noqa: S105 - a throw-away password of a throw-away ACL user

urlpatterns = [
    path("", include("tests.urls")),
    path("tiercache/", include("django_tiercache.urls")),
]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0?password=s3cret&db=2", "redis://h:6379/0?password=***&db=2"),
        ("rediss://user@h/0?PASSWORD=s3cret", "rediss://user@h/0?PASSWORD=***"),
        ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact__hides_the_password_of_every_url_form(url, shown):
    assert redact(url) == shown


def test_redact_text__hides_passwords_of_urls_inside_a_message():
    text = "error on redis://u:s3cret@h:1/0 (and redis://h:2/0?password=s3cret)"
    assert "s3cret" not in redact_text(text)
    assert "redis://u:***@h:1/0" in redact_text(text)


@pytest.fixture
def acl_server(clean_redis_servers):
    """A server with a user who may not run CONFIG, as managed services often are."""
    server = clean_redis_servers[0]
    with server.client() as admin:
        admin.acl_setuser(
            "tc-app", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], channels=["*"],
            commands=["+@all", "-config"],
        )  # fmt: skip
    yield server
    with server.client() as admin:
        admin.acl_deluser("tc-app")


@pytest.fixture
def secret_cache(settings, acl_server, clean_redis_servers, closed_port_url):
    host = f"127.0.0.1:{acl_server.port}"
    down = closed_port_url.replace("redis://", f"redis://:{SECRET}@")
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": [
                f"redis://tc-app:{SECRET}@{host}/0",
                f"redis://tc-app@{host}/1?password={SECRET}",
                down,
            ],
            "KEY_PREFIX": f"secret-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"HOT_KEYS": {"SAMPLE": 1.0, "LOCATION": down}},
        }
    }
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True}
    return caches["default"]


def test_stats_views_and_logs__never_show_a_password(client, admin_user, secret_cache, caplog):
    caplog.set_level(logging.DEBUG, logger="django_tiercache")
    for n in range(20):
        secret_cache.set(f"k{n}", n)
        secret_cache.get(f"k{n}")
    record_of(secret_cache).flush()  # fails on the closed port: an error counted against its URL
    client.force_login(admin_user)
    page = client.get(PAGE).content.decode()
    publishing.publish_all()
    recent.forget()
    shown = [page, client.get(JSON).content.decode(), client.get(METRICS).content.decode()]
    shown.append(caplog.text)
    assert "hot-key record on" in caplog.text
    assert all(SECRET not in text for text in shown)
    assert "redis://tc-app:***@" in page  # the partition is still named
    assert "?password=***" in page
    assert "hot_keys_flush" in page  # the hot-key error, under its redacted URL
    assert "RDB unknown (CONFIG refused)" in page  # CONFIG is not allowed for this user
