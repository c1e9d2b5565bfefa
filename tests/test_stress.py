"""The concurrency figure that matters, at a small size: no reader goes back in time."""

import os

import pytest
from django.db import connection

from tests import stress
from tests.testapp.models import Product

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shared_database_env():
    """Environment for subprocesses that use the test database this test sees."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the processes share one database")
    settings = connection.settings_dict
    url = (
        f"postgres://{settings['USER'] or 'postgres'}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}"
    )
    return {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings"}


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
