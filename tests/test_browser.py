"""The statistics page as a person uses it: Playwright driving Debian's Chromium.

Playwright cannot download its own browsers here, so it is pointed at
/usr/bin/chromium (the apt package ``chromium``, which .ci/run installs); the
test is skipped where that is missing. Screenshots land in artifacts/ (or
$TIERCACHE_ARTIFACTS): stats-page.png, and stats-<theme>-<width>-<state>.png
for the light and dark themes, at 1280 and 800 px, healthy and with a
partition down. Look at them after changing the page.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.core.cache import caches

from tests.admin_support import make_user, use_tiercache

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


def log_in(page, url):
    page.goto(url)
    page.fill("#id_username", "oncall")
    page.fill("#id_password", "pw-oncall")
    page.click("input[type=submit]")
    page.wait_for_url(url)


# Cells of the partitions' and servers' tables whose left edge is not under the header
# cell of their column, as "table/row/column".
MISALIGNED_CELLS = """() => {
  const wrong = [];
  document.querySelectorAll('.tc-partitions, .tc-servers').forEach((table, t) => {
    if (getComputedStyle(table.tHead).display === 'none') return;  // stacked: no columns
    const heads = [...table.querySelectorAll('thead th')].map(h => h.getBoundingClientRect().left);
    table.querySelectorAll('tbody tr.tc-partition, tbody tr.tc-server').forEach((row, r) => {
      let column = 0;
      for (const cell of row.cells) {
        const left = cell.getBoundingClientRect().left;
        if (Math.abs(left - heads[column]) > 1) wrong.push(t + '/' + r + '/' + column);
        column += cell.colSpan;
      }
    });
  });
  return wrong;
}"""

# Tables that need their scrolling box to be read: a table must fit its page
# (below a width, the wide ones stack each row into labelled figures).
SCROLLED_TABLES = """() => [...document.querySelectorAll('.tc-scroll')]
  .filter(box => box.scrollWidth > box.clientWidth + 1)
  .map(box => (box.querySelector('table').className || 'a table without class')
    + ` (${box.scrollWidth} px in ${box.clientWidth})`)"""

# Warnings and the partitions' health columns (breaker, errors, calls, p95) that lie
# beyond the right edge of their cache's box: a wide table scrolls, and what must be
# seen at a glance must not be what scrolls out of view.
OUT_OF_VIEW = """() => [...document.querySelectorAll('.tc-cache')].flatMap(box => {
  const edge = box.getBoundingClientRect().right + 1;
  return [...box.querySelectorAll('.tc-advice, .tc-partitions .tc-health')]
    .filter(el => el.getBoundingClientRect().right > edge)
    .map(el => el.textContent.trim().slice(0, 40));
})"""

# WCAG contrast of an element's text against the first opaque background behind it.
CONTRAST = r"""(el) => {
  const rgba = c => {
    const v = c.match(/[\d.]+/g).map(Number);
    return v.length < 4 ? [...v, 1] : v;
  };
  const channel = v => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  const lum = c => 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]);
  let node = el, bg = [255, 255, 255, 1];
  while (node) {
    const c = rgba(getComputedStyle(node).backgroundColor);
    if (c[3] > 0) { bg = c; break; }
    node = node.parentElement;
  }
  const style = getComputedStyle(el), fg = rgba(style.color);
  const alpha = fg[3] * parseFloat(style.opacity);
  const seen = fg.slice(0, 3).map((v, i) => v * alpha + bg[i] * (1 - alpha));
  const [light, dark] = [lum(seen), lum(bg)].sort((a, b) => b - a);
  return (light + 0.05) / (dark + 0.05);
}"""

# Chart heads whose title and "now / top" label touch or overlap.
CROWDED_CHART_HEADS = """() => [...document.querySelectorAll('.tc-chart-head')].filter(head => {
  const title = head.children[0].getBoundingClientRect();
  const label = head.children[1].getBoundingClientRect();
  return !(label.top >= title.bottom - 1 || label.left >= title.right + 8);
}).map(head => head.children[0].textContent)"""

# Tables that stick out of their cache's section without a scrolling box around them.
CLIPPED_TABLES = """() => [...document.querySelectorAll('.tc-cache table')].filter(table => {
  const edge = table.closest('.tc-cache').getBoundingClientRect().right + 1;
  if (table.getBoundingClientRect().right <= edge) return false;
  const box = table.closest('.tc-scroll');
  const scrolls = box && getComputedStyle(box).overflowX === 'auto';
  return !(scrolls && box.getBoundingClientRect().right <= edge);
}).map(table => table.className || 'a table without class')"""


def test_stats_page__live_figures_and_an_action(
    live_server, oncall, browser_page, settings, shared_redis_url
):
    cache = use_tiercache(settings, shared_redis_url, "browser")
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


def look(page, theme, width, state):
    """The page in one theme at one width: checked, and saved for a person to look at."""
    page.emulate_media(color_scheme=theme)
    page.set_viewport_size({"width": width, "height": 1000})
    page.reload()
    # Saved first, so that a page that fails a check below is there to look at.
    page.screenshot(path=str(ARTIFACTS / f"stats-{theme}-{width}-{state}.png"), full_page=True)
    if page.locator(".tc-partitions").count():  # the widest table, close up
        shot = ARTIFACTS / f"stats-{theme}-{width}-{state}-partitions.png"
        page.locator(".tc-partitions").first.screenshot(path=str(shot))
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.evaluate(CLIPPED_TABLES) == []
    assert page.evaluate(SCROLLED_TABLES) == []
    assert page.evaluate(CROWDED_CHART_HEADS) == []
    assert page.evaluate(MISALIGNED_CELLS) == []
    assert page.evaluate(OUT_OF_VIEW) == []
    for text in page.locator(".tc-cache caption .tc-muted, .tc-cache .tc-muted").all():
        assert text.evaluate(CONTRAST) >= 4.5, f"{theme}: {text.text_content()!r} is hard to read"


def test_stats_page__reads_well_in_both_themes_at_1280_and_800_px_and_with_a_partition_down(
    live_server, oncall, browser_page, settings, clean_redis_servers
):
    alpha, beta = clean_redis_servers[:2]
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": [alpha.url, beta.url],
            "KEY_PREFIX": f"themes-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {"PARTITION_NAMES": ["alpha", "beta"], "SOCKET_TIMEOUT": 0.5},
        }
    }
    cache = caches["default"]
    cache.set_many({f"product:{n}": n for n in range(400)}, tags=["shop.product"])
    cache.get_many([f"product:{n}" for n in range(500)])
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_in(page, f"{live_server.url}/admin/django_tiercache/stats/")
    assert "balanced" in page.text_content(".tc-partitions caption")  # the summary is shown
    # Both on noeviction: one warning for both, below the table, kept in view.
    assert page.locator('[data-advice="policy"]').count() == 1
    assert "noeviction on every partition" in page.text_content('[data-advice="policy"]')

    for theme in ("light", "dark"):
        for width in (1280, 800):
            look(page, theme, width, "healthy")

    beta.stop()
    for theme in ("light", "dark"):
        for width in (1280, 800):
            look(page, theme, width, "partition-down")
    assert "Partitions down: beta" in page.text_content("#content-main")
    down = page.locator(".tc-partition[data-partition=beta] td.tc-down")
    assert "unreachable" in down.text_content()


def test_stats_page__a_cache_with_bad_settings_reads_well_next_to_a_good_one(
    live_server, oncall, browser_page, settings, clean_redis_servers
):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": clean_redis_servers[0].url,
            "KEY_PREFIX": f"misconfigured-{uuid.uuid4().hex[:8]}",
        },
        "sessions": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": "redis://:hunter2@127.0.0.1:6379/0",
            "OPTIONS": {"SOCKET_TIMEOUT": "fast", "LEASE_SECONDSS": 3},
        },
    }
    caches["default"].set("k", 1)
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_in(page, f"{live_server.url}/admin/django_tiercache/stats/")
    for theme in ("light", "dark"):
        for width in (1280, 800):
            look(page, theme, width, "misconfigured")
    bad = page.locator('[data-alias="sessions"]')
    assert "This cache cannot be built: tiercache.E002: Unknown OPTIONS key 'LEASE_SECONDSS'" in (
        bad.text_content()
    )
    assert bad.locator("table, form").count() == 0  # nothing to show or act on
    assert page.locator('[data-alias="default"] form').count() == 3  # the good one keeps its own
    assert "hunter2" not in page.content()


def test_stats_page__cluster_nodes_and_a_sentinel_primary_in_both_themes(
    live_server, oncall, clean_redis_cluster, sentinel_set, browser_page, settings
):
    """One cache on a Redis Cluster, one on a Sentinel-managed primary: every node with its
    role and slots, the primary with its replica and the failovers it has seen."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": clean_redis_cluster.url(),
            "KEY_PREFIX": f"nodes-{uuid.uuid4().hex[:8]}",
        },
        "sessions": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": sentinel_set.url(),
            "KEY_PREFIX": f"nodes-{uuid.uuid4().hex[:8]}",
        },
    }
    for alias in settings.CACHES:
        cache = caches[alias]
        cache.set_many({f"product:{n}": n for n in range(200)}, tags=["shop.product"])
        cache.get_many([f"product:{n}" for n in range(250)])
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_in(page, f"{live_server.url}/admin/django_tiercache/stats/")
    cluster, sentinel = page.locator(".tc-cache").all()
    assert cluster.locator(".tc-server[data-role=master]").count() == 3
    assert cluster.locator(".tc-server[data-role=replica]").count() == 3
    assert cluster.locator('[data-figure="slots-served"]').text_content() == "16,384"
    primary = sentinel.locator(".tc-server[data-role=primary]")
    assert primary.get_attribute("data-server") == f"127.0.0.1:{sentinel_set.primary.port}"
    assert primary.locator('[data-figure="failovers-seen"]').text_content() == "0"
    assert sentinel.locator(".tc-server[data-role=replica]").count() == 1
    for theme in ("light", "dark"):
        for width in (1280, 800):
            look(page, theme, width, "servers")
    for alias in settings.CACHES:
        caches[alias].clear()


@pytest.fixture
def pending_write(settings, shared_redis_url, journal_prefix):
    """A cache of the test's own and one row pending in a write-behind journal of its own
    (made before the browser starts, like oncall)."""
    from django_tiercache import write_behind
    from tests.testapp.models import Counter

    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"browser-{uuid.uuid4().hex[:8]}",
        }
    }
    row = Counter.objects.create(name="viewed")
    row.hits = 12
    write_behind.save(row)
    yield row
    caches["default"].clear()


@pytest.mark.django_db(transaction=True)
def test_stats_page__write_behind_section_and_flush_now(
    live_server, oncall, pending_write, browser_page
):
    page = browser_page
    log_in(page, f"{live_server.url}/admin/django_tiercache/stats/")
    assert page.is_visible("#write-behind")
    assert figure(page, "pending") == 1
    page.click("#write-behind input[value='Flush write-behind']")
    page.wait_for_selector(".messagelist .success")
    assert "1 row written" in page.text_content(".messagelist")
    assert figure(page, "pending") == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#write-behind").screenshot(path=str(ARTIFACTS / "stats-write-behind.png"))


@pytest.fixture
def sampled_hits(settings, shared_redis_url):
    """199 consistent get_object hits and one stale one, every hit sampled and checked
    (made before the browser starts, like oncall)."""
    from django_tiercache import get_object
    from django_tiercache.orm import consistency
    from tests.testapp.models import Product
    from tests.unseen_sql import unseen_sql

    settings.CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": shared_redis_url,
            "KEY_PREFIX": f"sampled-{uuid.uuid4().hex[:8]}",
        }
    }
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "CONSISTENCY_SAMPLE_RATE": 1.0,
        "CONSISTENCY_GRACE": 0.0,
    }
    fine = Product.objects.create(name="fine")
    get_object(Product, fine.pk)  # a miss: loaded, not sampled
    for _ in range(199):
        get_object(Product, fine.pk)
    # The sampler re-reads in a thread of its own: on SQLite's shared in-memory
    # database its reads lock the table, so let it finish before writing.
    assert consistency.wait_idle()
    stale = Product.objects.create(name="cached")
    get_object(Product, stale.pk)
    unseen_sql("UPDATE testapp_product SET name = %s WHERE id = %s", ["changed", stale.pk])
    get_object(Product, stale.pk)  # served while the database has moved on
    assert consistency.wait_idle()
    yield
    caches["default"].clear()


@pytest.mark.django_db(transaction=True)
def test_stats_page__shows_the_consistency_samplers_nines(
    live_server, oncall, sampled_hits, browser_page
):
    page = browser_page
    log_in(page, f"{live_server.url}/admin/django_tiercache/stats/")
    row = page.locator("tr", has=page.locator('[data-figure="consistency"]'))
    assert row.locator("th").text_content() == "consistency (sampled hits)"
    for cell in ('[data-figure="consistency-hour"]', '[data-figure="consistency"]'):
        text = " ".join(page.text_content(cell).split())
        assert text == "2.3 nines 1 stale in 200 samples", text
    assert row.locator(".tc-stale").count() == 2  # shown as an error, not as detail
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        for width in (1280, 800):
            look(page, theme, width, "consistency")
            figures = page.locator(".tc-figures").first
            figures.screenshot(
                path=str(ARTIFACTS / f"stats-{theme}-{width}-consistency-figures.png")
            )
            muted = row.locator(".tc-muted").first
            assert muted.evaluate(CONTRAST) >= 4.5, f"{theme}: the sample counts are hard to read"


def test_key_browser__search_look_and_delete(
    live_server, oncall, browser_page, settings, shared_redis_url
):
    """From the statistics page to the keys, a pattern searched, one key checked and
    deleted; saved in both themes at 1280 and 800 px (keys-<theme>-<width>.png)."""
    cache = use_tiercache(settings, shared_redis_url, "browser")
    cache.set("product:1", {"name": "kettle", "price": "19.90"}, tags=["shop.product:1"])
    cache.set("product:2", {"name": "a teapot with a long description " * 12}, timeout=None)
    cache.set("session:9", "elsewhere")
    page = browser_page
    log_in(page, f"{live_server.url}/admin/django_tiercache/stats/")
    page.click("text=Browse the keys")
    page.wait_for_url("**/stats/keys/**")
    page.fill("#tc-pattern", "product:*")
    page.click("input[value=Search]")
    page.wait_for_url("**pattern=product*")
    assert page.locator(".tc-keys tbody tr").count() == 2
    assert "kettle" in page.text_content(".tc-keys")
    assert "session:9" not in page.text_content("#content-main")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        for width in (1280, 800):
            page.emulate_media(color_scheme=theme)
            page.set_viewport_size({"width": width, "height": 900})
            page.reload()
            page.screenshot(path=str(ARTIFACTS / f"keys-{theme}-{width}.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.check('input[aria-label="delete product:1"]')
    page.click("input[value='Delete the checked keys']")
    page.wait_for_selector("text=Are you sure you want to delete this key")
    assert "product:1" in page.text_content("#content-main ul")
    page.screenshot(path=str(ARTIFACTS / "keys-delete-question.png"), full_page=True)
    assert cache.get("product:1") is not None  # asked, not yet deleted
    page.click("input[value='Yes, I’m sure']")
    page.wait_for_selector(".messagelist .success")
    assert "Deleted 1 key" in page.text_content(".messagelist")
    assert page.locator(".tc-keys tbody tr").count() == 1
    assert cache.get("product:1") is None
    assert cache.get("session:9") == "elsewhere"
    cache.clear()


# Cells of the key browser's cards whose text runs out of their box (a word wider
# than the column it landed in), as "row/label".
OVERFLOWING_KEY_CELLS = """() => [...document.querySelectorAll('.tc-keys tbody tr')]
  .flatMap((row, r) => [...row.cells].filter(cell => cell.scrollWidth > cell.clientWidth + 1)
    .map(cell => r + '/' + (cell.dataset.label || cell.className)))"""

# Partition names, in the statistics page's stacked cards, broken over more lines
# than they need (the whole card's width is theirs).
BROKEN_PARTITION_NAMES = """() => [...document.querySelectorAll(
    '.tc-partitions tr.tc-partition td:first-child code')]
  .filter(code => code.getClientRects().length > 1
    && code.textContent.length * 9 < code.closest('tr').getBoundingClientRect().width)
  .map(code => code.textContent)"""


@pytest.fixture
def looker(django_user_model):
    # Made before the browser starts (see oncall).
    return make_user(django_user_model, "looker", "view_cachestats")  # password "pw"


def test_key_browser_and_stats__at_800_px_for_a_user_who_may_only_view(
    live_server, looker, browser_page, settings, shared_redis_url
):
    """Without the checkbox column the cards keep their figures in their columns, and
    a partition's name keeps to one line when it fits (keys-viewer-<theme>-800.png)."""
    cache = use_tiercache(settings, shared_redis_url, "browser")
    cache.set("product:1", {"name": "kettle"}, tags=["shop.product:1"])
    cache.set("stale", "old", tags=["gone"])
    cache.invalidate_tags("gone")
    cache.sadd("colors", "red")
    page = browser_page
    page.set_viewport_size({"width": 800, "height": 900})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "looker")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        page.emulate_media(color_scheme=theme)
        page.goto(f"{live_server.url}/admin/django_tiercache/stats/keys/")
        assert page.locator(".tc-keys tbody tr").count() == 3
        assert page.locator(".tc-keys thead").is_hidden()  # the cards
        page.screenshot(path=str(ARTIFACTS / f"keys-viewer-{theme}-800.png"), full_page=True)
        assert page.evaluate(OVERFLOWING_KEY_CELLS) == []
        page.goto(f"{live_server.url}/admin/django_tiercache/stats/")
        assert page.evaluate(BROKEN_PARTITION_NAMES) == []
    cache.clear()
