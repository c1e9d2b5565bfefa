"""The statistics page as a person uses it: Playwright driving Debian's Chromium.

Playwright cannot download its own browsers here, so it is pointed at
/usr/bin/chromium (the apt package ``chromium``, which .ci/run installs); the
test is skipped where that is missing. The screenshot lands in artifacts/
(or $TIERCACHE_ARTIFACTS).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.core.cache import caches

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("TIERCACHE_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts")
)

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM}")
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def oncall(django_user_model):
    # Made before the browser starts: Playwright's sync API runs an event loop in
    # this thread, and the ORM refuses to run (or opens another connection) under it.
    return django_user_model.objects.create_superuser("oncall", "oncall@example.com", "pw-oncall")


@pytest.fixture
def browser_page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def figure(page, name):
    return int(page.text_content(f'[data-figure="{name}"]').replace(",", ""))


def test_stats_page__live_figures_and_an_action(
    live_server, oncall, browser_page, settings, shared_redis_url
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"browser-{uuid.uuid4().hex[:8]}",
        }
    }
    cache = caches["default"]
    cache.set("product:1", {"name": "kettle"}, tags=["shop.product:1"])
    cache.get("product:1")
    page = browser_page

    page.goto(f"{live_server.url}/admin/django_tiercache/stats/")
    assert "/admin/login/" in page.url  # anonymous: the login page first
    page.fill("#id_username", "oncall")
    page.fill("#id_password", "pw-oncall")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/django_tiercache/stats/")
    assert page.title().startswith("Cache statistics")
    assert figure(page, "hits") == 1

    for _ in range(24):
        cache.get("product:1")
    for n in range(5):
        cache.get(f"absent:{n}")
    page.reload()
    assert figure(page, "hits") == 25
    assert figure(page, "misses") == 5
    assert page.locator(".tc-target .tc-badge").count() == 3

    page.fill("input[name=tags]", "shop.product:1")
    page.click("input[value=Invalidate]")
    page.wait_for_selector(".messagelist .success")
    assert "Invalidated 1 tag(s)" in page.text_content(".messagelist")
    assert cache.get("product:1") is None
    row = page.locator(".tc-invalidations tr", has_text="shop.product")
    assert row.locator("td.num").text_content() == "1"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "stats-page.png"), full_page=True)
    cache.clear()
