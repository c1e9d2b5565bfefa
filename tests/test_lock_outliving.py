"""A save never outlives its own write locks (issue: WRITE_LOCK_TIMEOUT below TAG_LEASE).

With one of three partitions down a save's lock waits in its fence for up to
TAG_LEASE; locks that expire meanwhile would let a reader cache the old row and
serve it after the save. The save must stop first, and ``manage.py check``
must name the setting. Real redis-server processes, one stopped.
"""

from __future__ import annotations

import threading

import pytest
from django.core.checks import run_checks
from django.db import connections

from django_tiercache import get_object
from django_tiercache.exceptions import InvalidationIncomplete
from tests.test_guarantees import model_cache  # noqa: F401 - the fixture
from tests.testapp.models import Product


def test_write_lock_timeout_below_tag_lease__is_tiercache_e015(settings):
    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_LOCK_TIMEOUT": 1}
    (message,) = [m for m in run_checks() if m.id == "tiercache.E015"]
    assert "WRITE_LOCK_TIMEOUT" in message.msg and "TAG_LEASE" in message.msg
    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_LOCK_TIMEOUT": 30}
    assert "tiercache.E015" not in [m.id for m in run_checks()]


@pytest.mark.django_db(transaction=True)
def test_a_save_whose_locks_may_have_expired__stops_and_no_read_after_it_is_stale(
    model_cache,  # noqa: F811
    settings,
):
    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_LOCK_TIMEOUT": 1}
    servers = model_cache(3, TAG_LEASE=3.0)
    product = Product.objects.create(name="outlived", version=1)
    assert get_object(Product, product.pk).version == 1
    servers[2].stop()
    stop = threading.Event()

    def read_meanwhile():
        while not stop.is_set():
            try:
                get_object(Product, product.pk)  # would cache the old row once the locks expire
            except Exception:  # noqa: BLE001, S112 - a failing read is not what is tested
                continue
        connections.close_all()

    reader = threading.Thread(target=read_meanwhile)
    reader.start()
    product.version = 2
    try:
        product.save()
        saved = True
    except InvalidationIncomplete:
        saved = False
    finally:
        stop.set()
        reader.join(10)
    # Its lock waited in the fence past WRITE_LOCK_TIMEOUT: the save stopped before
    # its query (it went ahead with expired locks before, taking about TAG_LEASE).
    assert not saved
    in_database = Product.objects.get(pk=product.pk).version
    assert in_database == 1
    reads = [get_object(Product, product.pk).version for _ in range(4)]
    assert reads == [in_database] * 4  # 0 stale after the save returned (or raised)
