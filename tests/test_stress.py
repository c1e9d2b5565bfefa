"""The concurrency figure that matters, at a small size: no reader goes back in time."""

import json
import os

import pytest

from tests import stress
from tests.chaos import ACTIONS, Chaos
from tests.testapp.models import Product

pytestmark = pytest.mark.django_db(transaction=True)


def test_writers_and_readers__no_stale_reads(shared_database_env):
    from django.core.cache import cache

    cache.clear()
    pks = [Product.objects.create(name=f"s{i}").pk for i in range(3)]
    reports = stress.run(writers=2, readers=2, pks=pks, seconds=4, env=shared_database_env)
    writes = sum(r["operations"] for r in reports if r["role"] == "writer")
    reads = sum(r["reads"] for r in reports if r["role"] == "reader")
    assert writes > 20 and reads > 200  # the race really ran
    assert [r["stale"] for r in reports if r["role"] == "reader"] == [0, 0]
    assert Product.objects.filter(pk__in=pks).values_list("version", flat=True).count() == 3


def test_writers_and_readers_with_l1__no_stale_reads(shared_database_env, shared_redis_url):
    """The same race with every process keeping L1 copies: a save announces itself
    once (its lock), its unlock and the fills after it not at all (stores/lua.py),
    and still no reader goes back in time."""
    cache = stress.cache_setting(shared_redis_url, "l1stress")
    cache["OPTIONS"]["L1"] = True
    env = {**shared_database_env, "TIERCACHE_TEST_CACHE": json.dumps(cache)}
    pks = [Product.objects.create(name=f"l{i}").pk for i in range(3)]
    reports = stress.run(writers=2, readers=2, pks=pks, seconds=4, env=env, pause=0.01)
    writes = sum(r["operations"] for r in reports if r["role"] == "writer")
    reads = sum(r["reads"] for r in reports if r["role"] == "reader")
    copies = sum(r["l1_copies"] for r in reports if r["role"] == "reader")
    assert writes > 20 and reads > 200  # the race really ran
    assert copies > 20, "the readers' L1 held no copies to serve"
    assert [r["stale"] for r in reports if r["role"] == "reader"] == [0, 0]


def test_a_save_in_another_process__is_seen_here(shared_database_env):
    import subprocess
    import sys

    from django_tiercache import get_object

    product = Product.objects.create(name="xproc")
    assert get_object(Product, product.pk).version == 0
    script = (
        "import django; django.setup();"
        "from tests.testapp.models import Product;"
        f"p = Product.objects.get(pk={product.pk}); p.version = 5; p.save()"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        env=shared_database_env,  # noqa: S603
        timeout=60,
        cwd=stress.ROOT,
    )
    assert get_object(Product, product.pk).version == 5


@pytest.mark.parametrize("partitions", [1, 2, 3])
def test_losing_metadata_restarts_and_full_servers__no_stale_reads(
    shared_database_env, clean_redis_servers, partitions, capsys
):
    """Writers and readers on PostgreSQL while the chaos loop deletes metadata
    keys of every kind, restarts partitions empty and from older snapshots, and
    fills them under allkeys-lru and noeviction: no reader goes back in time.

    TIERCACHE_CHAOS (comma-separated actions, see tests/chaos.py) runs a subset.
    """
    servers = clean_redis_servers[:partitions]
    cache = stress.cache_setting([s.url for s in servers], "chaos")
    env = {**shared_database_env, "TIERCACHE_TEST_CACHE": json.dumps(cache)}
    actions = os.environ.get("TIERCACHE_CHAOS", ",".join(ACTIONS)).split(",")
    pks = [Product.objects.create(name=f"c{i}").pk for i in range(12)]
    with Chaos(servers, cache["KEY_PREFIX"], actions=actions) as chaos:
        reports = stress.run(writers=2, readers=3, pks=pks, seconds=10, env=env, pause=0.02)
    totals = stress.summary(reports)
    note = f"actions {dict(chaos.done)}"
    stress.show(capsys, stress.describe(f"chaos over {partitions} partitions", totals, note))
    assert totals["commits"] > 20 and totals["reads"] > 300, "the race did not really run"
    assert sum(chaos.done.values()) >= 5, "the chaos loop did not really run"
    assert totals["stale"] == [0, 0, 0]
    if partitions > 1 or not {"restart", "restore"} & set(actions):
        # Only a lone partition that is down refuses saves (they raise before
        # committing); a full one, or one of several, must not.
        assert totals["refused"] == 0
