"""The "never stale" guarantee when Redis loses metadata, is full, restarts, or clocks disagree.

Each test takes away one thing the design depends on, with real redis-server
processes (deleting keys as an eviction would, restarting, restoring an older
snapshot, filling the server), and checks that the loss costs hits, never
correctness.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection, transaction
from redis.exceptions import OutOfMemoryError

from django_tiercache import get_object
from django_tiercache.exceptions import InvalidationIncomplete
from django_tiercache.orm import raw_sql
from django_tiercache.orm.registry import instance_tag
from django_tiercache.storage.hooks import declare_lock_horizon
from django_tiercache.storage.stores.slots import bucket_field, bucket_key
from tests.test_failures import FAST, keys_on, policy_count
from tests.testapp.models import Category, Product
from tests.unseen_sql import unseen_sql


@pytest.fixture(autouse=True)
def witness_connections_closed():
    """The database witness keeps a connection of its own: close it after each test,
    so that the test database can be dropped."""
    from django_tiercache.orm.witness import close_connections

    yield
    close_connections()


def meta_key(cache):
    return f"{cache.key_prefix}:_tc:meta"


def fill_allowed(cache, key="probe"):
    """Can a tagged entry be stored (and read back) right now?"""
    cache.set(key, "value", tags=["probe-tag"])
    return cache.get(key) == "value"


# -- losing metadata: the meta hash (locks, fences, grants, epochs) --


def test_losing_the_meta_hash__drops_tagged_entries_and_holds_fills_for_the_lock_horizon(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    # Greet the server before declaring the horizon: a server restarted by an
    # earlier test is younger than the horizon, and would hold fills at first.
    cache.get("greeting")
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", 0.6)
    cache.set("tagged", "old", tags=["t"])
    cache.set("plain", "kept")
    assert cache.get("tagged") == "old"
    server.client().delete(meta_key(cache))  # what an eviction or a stray DEL does
    assert not fill_allowed(cache)  # locks held there may be gone: no fills for now
    assert cache.get("tagged") is None  # the generation was dropped with it
    assert cache.get("plain") == "kept"
    time.sleep(0.7)  # any lock it could have held has expired by now
    assert fill_allowed(cache)


def test_a_write_lock_lost_with_the_meta_hash__still_keeps_fills_out(
    clean_redis_servers, make_cache
):
    """The lock is what keeps a reader from caching pre-commit data: losing it
    must not let such data in."""
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", 30)
    cache.lock_tags("writer", ["row:1"], seconds=30)
    cache.set("row", "read before the commit", tags=["row:1"])
    assert cache.get("row") is None
    server.client().delete(meta_key(cache))
    cache.set("row", "read before the commit", tags=["row:1"])
    assert cache.get("row") is None
    assert cache.get_or_set("row", "computed", tags=["row:1"]) == "computed"
    assert cache.get("row") is None


def test_without_a_declared_lock_horizon__a_lost_meta_hash_holds_no_fills(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)  # nobody takes write locks on this cache
    cache.set("tagged", "old", tags=["t"])
    server.client().delete(meta_key(cache))
    assert fill_allowed(cache)


def test_a_peer_whose_meta_hash_was_evicted__cannot_vouch(clean_redis_servers, make_cache):
    first, second = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([first.url, second.url], TAG_LEASE=0.5, **FAST)
    keys = keys_on(cache, first.url, count=3)
    cache.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, "old")
    second.client().delete(meta_key(cache))  # the fences it kept for `first` are gone
    time.sleep(0.6)  # first's lease runs out; its renewal asks `second`
    assert cache.get_many(keys) == {}
    assert policy_count(cache, "fenced", first.url) == 1


def test_a_lost_grant__makes_an_invalidation_wait_a_whole_lease(clean_redis_servers, make_cache):
    first, second = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([first.url, second.url], TAG_LEASE=5, **FAST)
    cache.get_many(keys_on(cache, first.url, count=1))
    first_id = cache._partitions[0].id
    second.client().delete(meta_key(cache))  # the grants it noted are gone
    (left,) = cache._partitions[1].run("record_fence", [first_id], 5000).value
    assert 4000 < left <= 5000  # "a lease granted before I lost them may still run"


def test_losing_a_lease_key__only_costs_a_renewal(clean_redis_servers, make_cache):
    first, second = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([first.url, second.url], TAG_LEASE=5, **FAST)
    keys = keys_on(cache, first.url, count=3)
    cache.set_many(dict.fromkeys(keys, 1), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, 1)
    first.client().delete(f"{cache.key_prefix}:_tc:lease")
    assert cache.get_many(keys) == dict.fromkeys(keys, 1)  # renewed, then read again


# -- restarts, older snapshots --


def test_a_partition_restored_from_an_older_snapshot__does_not_bring_entries_back(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set("product", "version 1", tags=["product:1"])
    assert cache.get("product") == "version 1"
    server.client().save()  # the snapshot a restart will load
    cache.invalidate_tags("product:1")
    cache.set("product", "version 2", tags=["product:1"])
    server.process.kill()  # no SHUTDOWN SAVE: the older snapshot is what comes back
    server.process.wait()
    server.start()
    raw = server.client()
    assert raw.exists(cache.make_key("product")) == 1  # "version 1" is back in Redis...
    assert cache.get("product") is None  # ...and is not served
    cache.set("product", "version 3", tags=["product:1"])
    assert cache.get("product") == "version 3"
    (server.directory / "dump.rdb").unlink()


def test_a_restart_during_a_write_lock__keeps_fills_out_for_the_horizon(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", 30)
    cache.lock_tags("writer", ["row:1"], seconds=30)
    server.stop()
    server.start()  # empty: the lock is gone, and the server has been up for moments
    time.sleep(FAST["BREAKER_COOLDOWN"])
    cache.set("row", "read before the commit", tags=["row:1"])
    assert cache.get("row") is None


# -- a full Redis --


@contextlib.contextmanager
def filled_up(*servers, policy):
    """Each server's maxmemory just above what it uses, with `policy`, filled to
    it; afterwards the limit, the policy and the counters are as before."""
    raws = [s.client() for s in servers]
    try:
        for raw in raws:
            raw.config_set("maxmemory-policy", policy)
            raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 2 * 2**20)
            with contextlib.suppress(OutOfMemoryError):  # noeviction: full
                for i in range(1000):
                    raw.set(f"filler:{i}", "x" * 10_000)
        yield
    finally:
        for raw in raws:
            raw.config_set("maxmemory", 0)
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_resetstat()


def test_a_full_redis__still_takes_locks_and_invalidations(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set("row", "old", tags=["row:1"])
    with filled_up(server, policy="noeviction"):
        cache.set("other", "x" * 100_000, tags=["x"])  # refused: the server is full
        assert cache.get("other") is None
        cache.lock_tags("writer", ["row:1"], seconds=30)  # allow-oom: goes through
        assert cache.get("row") is None
        cache.unlock_tags("writer", ["row:1"])
        cache.invalidate_tags("row:1")


def test_a_write_a_full_redis_refuses__removes_the_old_value(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set("setting", "old value")
    with filled_up(server, policy="noeviction"):
        cache.set("setting", "new value " + "x" * 100_000)
        assert cache.get("setting") is None  # never the old value


def test_evicting_under_allkeys_lru__never_serves_an_invalidated_entry(
    clean_redis_servers, make_cache
):
    first, second = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([first.url, second.url], TAG_LEASE=0.5, **FAST)
    keys = [f"k{i}" for i in range(40)]
    cache.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    assert len(cache.get_many(keys)) == 40
    with filled_up(first, second, policy="allkeys-lru"):
        cache.invalidate_tags("t")
        assert cache.get_many(keys) == {}


# -- saves never commit stale --


@pytest.fixture
def model_cache(settings, clean_redis_servers):
    """The "default" cache, which the test app's models use, on throw-away servers."""

    def configure(count, **options):
        servers = clean_redis_servers[:count]
        settings.CACHES = {
            "default": {
                "BACKEND": "django_tiercache.backend.TierCache",
                "LOCATION": [s.url for s in servers],
                "KEY_PREFIX": "guarantee",
                "OPTIONS": {**FAST, "TAG_LEASE": 0.5, **options},
            }
        }
        return servers

    return configure


@pytest.mark.django_db(transaction=True)
def test_a_save_that_cannot_lock_its_only_partition__fails_before_the_query(model_cache):
    (server,) = model_cache(1)
    product = Product.objects.create(name="lonely", version=1)
    assert get_object(Product, product.pk).version == 1
    server.pause()  # one network blip: the lock times out
    product.version = 2
    with pytest.raises(InvalidationIncomplete):
        product.save()
    server.resume()
    assert Product.objects.get(pk=product.pk).version == 1  # nothing committed
    time.sleep(FAST["BREAKER_COOLDOWN"])
    assert get_object(Product, product.pk).version == 1


@pytest.mark.django_db(transaction=True)
def test_an_autocommit_save__finds_its_lock_in_redis_when_its_query_runs(model_cache):
    """The lock is sent at pre_save and awaited just before the query (its round
    trip overlaps Django building the query): however slow the lock, the query
    runs only once it is in place. Redis holds writes back for a moment; when
    the UPDATE reaches the database, the lock has already dropped the row's token."""
    (server,) = model_cache(1)
    product = Product.objects.create(name="slow-lock", version=1)
    assert get_object(Product, product.pk).version == 1  # the row's tag has a token
    client = server.client()
    tag = instance_tag(product)
    bucket, field = bucket_key("guarantee:_tc:", tag), bucket_field(tag)  # the tag's token
    assert client.hget(bucket, field) is not None
    tokens_at_update = []

    def look(execute, sql, params, many, context):
        if sql.startswith("UPDATE"):
            tokens_at_update.append(client.hget(bucket, field))  # a read: not held
        return execute(sql, params, many, context)

    client.execute_command("CLIENT", "PAUSE", 100, "WRITE")  # the lock waits 100 ms
    product.version = 2
    with connection.execute_wrapper(look):
        product.save()
    assert tokens_at_update == [None]
    assert get_object(Product, product.pk).version == 2


@pytest.mark.django_db(transaction=True)
def test_a_save_that_raises_before_its_query__leaves_the_projects_query_wrappers_as_they_were(
    model_cache,
):
    """The wrapper that awaits the lock goes first in the connection's list, so a
    project's ``with connection.execute_wrapper(...)`` pops its own wrapper even
    when a save raised before its query ran (ours was still in the list then)."""
    from django.db.models.signals import pre_save

    model_cache(1)
    product = Product.objects.create(name="raising", version=1)

    def refuse(sender, instance, **kwargs):
        raise RuntimeError("refused by a later pre_save receiver")

    def project_wrapper(execute, sql, params, many, context):
        return execute(sql, params, many, context)

    pre_save.connect(refuse, sender=Product, dispatch_uid="test-refuse")
    try:
        with connection.execute_wrapper(project_wrapper):
            with pytest.raises(RuntimeError, match="refused"):
                product.save()
    finally:
        pre_save.disconnect(sender=Product, dispatch_uid="test-refuse")
    assert project_wrapper not in connection.execute_wrappers
    assert Product.objects.get(pk=product.pk).version == 1  # the next query clears ours
    assert connection.execute_wrappers == [raw_sql.watch]  # only the raw-SQL watcher stays
    product.version = 2
    product.save()  # and the next write goes through as usual
    assert get_object(Product, product.pk).version == 2


def _fills_at_update(table: str, tag: str) -> Any:
    """An execute wrapper that, when the UPDATE of `table` reaches the database,
    tries to cache a value under `tag` and notes whether it was stored."""
    stored: list[bool] = []

    def look(execute, sql, params, many, context):
        if sql.startswith(f'UPDATE "{table}"'):
            cache = caches["default"]
            cache.set("fill", "old", tags=[tag])  # a reader filling from the old row
            stored.append(cache.get("fill") is not None)
        return execute(sql, params, many, context)

    return look, stored


def _save_version_2(product: Product, receiver: Any, look: Any) -> None:
    """Save `product` at version 2 with `receiver` on its pre_save and `look` around
    its queries."""
    from django.db.models.signals import pre_save

    pre_save.connect(receiver, sender=Product, dispatch_uid="test-inside")
    try:
        product.version = 2
        with connection.execute_wrapper(look):
            product.save()
    finally:
        pre_save.disconnect(sender=Product, dispatch_uid="test-inside")


@pytest.mark.django_db(transaction=True)
def test_a_save_inside_another_saves_pre_save__keeps_the_outer_locks_until_its_query(
    model_cache,
):
    """A pre_save receiver that saves another registered row, in autocommit: the
    inner save must not release the outer save's locks, whose query has not run."""

    model_cache(1)
    category = Category.objects.create(name="inner")
    product = Product.objects.create(name="outer", version=1)
    look, stored = _fills_at_update("testapp_product", instance_tag(product))

    def touch_category(sender, instance, **kwargs):
        category.name = f"inner-{instance.version}"
        category.save()

    _save_version_2(product, touch_category, look)
    assert stored == [False]  # still locked when the outer row changed
    assert caches["default"].get("fill") is None
    assert get_object(Product, product.pk).version == 2
    assert get_object(Category, category.pk).name == "inner-2"
    caches["default"].set("fill", "new", tags=[instance_tag(product)])
    assert caches["default"].get("fill") == "new"  # and released once both are made


@pytest.mark.django_db(transaction=True)
def test_an_explicit_invalidation_inside_a_save__is_made_and_keeps_the_save_locked(model_cache):

    import django_tiercache

    model_cache(1)
    product = Product.objects.create(name="explicit-inside", version=1)
    category = Category.objects.create(name="c")
    assert get_object(Category, category.pk).name == "c"
    # SQL Django never sees (another program's): nothing invalidates it by itself.
    unseen_sql("UPDATE testapp_category SET name = %s WHERE id = %s", ["raw", category.pk])
    assert get_object(Category, category.pk).name == "c"
    look, stored = _fills_at_update("testapp_product", instance_tag(product))

    def invalidate(sender, instance, **kwargs):
        django_tiercache.invalidate_instance(category)

    _save_version_2(product, invalidate, look)
    assert stored == [False]
    assert get_object(Category, category.pk).name == "raw"
    assert get_object(Product, product.pk).version == 2


@pytest.mark.django_db(transaction=True)
def test_a_save_whose_query_raised__has_its_locks_released_by_the_next_save(model_cache):
    model_cache(1)
    failed, other = Product.objects.create(name="fails"), Product.objects.create(name="next")

    def refuse(execute, sql, params, many, context):
        raise RuntimeError("the database refused")

    failed.version = 2
    with connection.execute_wrapper(refuse), pytest.raises(RuntimeError, match="refused"):
        failed.save()
    cache = caches["default"]
    cache.set("fill", 1, tags=[instance_tag(failed)])
    assert cache.get("fill") is None  # its lock is still there
    other.version = 2
    other.save()  # the same thread's next write releases it
    cache.set("fill", 1, tags=[instance_tag(failed)])
    assert cache.get("fill") == 1


@pytest.mark.django_db(transaction=True)
def test_a_save_in_a_transaction_that_cannot_lock__rolls_back(model_cache):
    (server,) = model_cache(1)
    product = Product.objects.create(name="atomic", version=1)
    assert get_object(Product, product.pk).version == 1
    server.pause()
    with pytest.raises(InvalidationIncomplete), transaction.atomic():
        product.version = 2
        product.save()
    server.resume()
    assert Product.objects.get(pk=product.pk).version == 1


@pytest.mark.django_db(transaction=True)
def test_a_save_that_cannot_lock__may_go_on_when_so_configured(model_cache):
    (server,) = model_cache(1, INVALIDATION_FAILURE="log")
    product = Product.objects.create(name="degraded", version=1)
    server.pause()
    product.version = 2
    product.save()  # logged, not raised: the documented risk is taken
    server.resume()
    assert Product.objects.get(pk=product.pk).version == 2


@pytest.mark.django_db(transaction=True)
def test_a_save_while_one_of_two_partitions_is_down__commits_and_stays_fresh(model_cache):
    first, second = model_cache(2)
    product = Product.objects.create(name="pair", version=1)
    assert get_object(Product, product.pk).version == 1
    second.pause()
    product.version = 2
    product.save()  # the fence is recorded on the live partition
    assert get_object(Product, product.pk).version == 2
    second.resume()
    time.sleep(0.6)
    assert get_object(Product, product.pk).version == 2


# -- a survivor keeps serving --


def test_with_three_partitions__the_survivors_keep_serving_tagged_entries(
    clean_redis_servers, make_cache
):
    servers = clean_redis_servers[:3]
    cache = make_cache([s.url for s in servers], TAG_LEASE=0.5, **FAST)
    survivor_keys = keys_on(cache, servers[0].url, count=5)
    cache.set_many(dict.fromkeys(survivor_keys, 1), tags=["t"])
    assert cache.get_many(survivor_keys) == dict.fromkeys(survivor_keys, 1)
    servers[2].stop()
    time.sleep(0.6)  # every lease renewed since asked the dead partition too
    assert cache.get_many(survivor_keys) == dict.fromkeys(survivor_keys, 1)
    cache.invalidate_tags("t")  # and invalidation still works (the dead one is fenced)
    assert cache.get_many(survivor_keys) == {}


# -- clocks --


@pytest.mark.parametrize("skew", [-31.0, -4.0, 1.5, 30.0])
def test_a_wrong_application_clock__changes_nothing(
    clean_redis_servers, make_cache, monkeypatch, skew
):
    """Deadlines come from the servers: an application clock seconds off in
    either direction neither lets a stale entry through nor costs hits."""
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + skew)
    urls = [s.url for s in clean_redis_servers]
    cache = make_cache(urls, TAG_LEASE=1.0, BREAKER_FAILURES=1, **FAST)
    victim = clean_redis_servers[3]
    keys = keys_on(cache, victim.url, count=3)
    cache.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, "old")  # leases granted and honoured
    cache.lock_tags("writer", ["row:1"], seconds=30)
    cache.set("row", "pre-commit", tags=["row:1"])
    assert cache.get("row") is None  # the lock exists, whatever the clock says
    victim.pause()
    assert cache.get(keys[0]) is None  # the breaker opens
    cache.invalidate_tags("t")
    victim.resume()
    time.sleep(FAST["BREAKER_COOLDOWN"] + 0.1)
    assert cache.get_many(keys) == {}


# -- robustness --


def test_a_foreign_value_that_looks_tagged__does_not_poison_other_reads(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    cache.set_many({"a": 1, "b": 2}, tags=["t"])
    for planted in (b"Tgarbage", b"T5:ab", b"T999:x", b"T3:1\n\n", b"T"):
        server.client().set(cache.make_key("planted"), planted)
        assert cache.get_many(["a", "planted", "b"]) == {"a": 1, "b": 2}
        assert cache.get("planted") is None


# -- the witness of last resort (the database) --


@pytest.mark.django_db(transaction=True)
def test_with_a_witness__the_survivor_of_two_keeps_serving(clean_redis_servers, make_cache):
    survivor, peer = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache([survivor.url, peer.url], TAG_LEASE=0.5, WITNESS="database", **FAST)
    keys = keys_on(cache, survivor.url, count=4)
    cache.set_many(dict.fromkeys(keys, 1), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, 1)
    peer.stop()
    time.sleep(0.6)  # the survivor's lease ran out: the witness vouched for it
    assert cache.get_many(keys) == dict.fromkeys(keys, 1)
    cache.invalidate_tags("t")  # complete: the fence for the dead peer is in the database
    assert cache.get_many(keys) == {}


@pytest.mark.django_db(transaction=True)
def test_with_a_witness__a_fence_outlives_the_peer_that_was_told(clean_redis_servers, make_cache):
    """The partition missed an invalidation; its only peer, which was told, then
    dies. Without a witness nothing would remember; with one, the partition is
    fenced when it comes back."""
    victim, peer = clean_redis_servers[0], clean_redis_servers[1]
    cache = make_cache(
        [victim.url, peer.url], TAG_LEASE=0.5, WITNESS="database", BREAKER_FAILURES=1, **FAST
    )
    keys = keys_on(cache, victim.url, count=3)
    cache.set_many(dict.fromkeys(keys, "old"), tags=["t"])
    assert cache.get_many(keys) == dict.fromkeys(keys, "old")
    victim.pause()
    assert cache.get(keys[0]) is None  # the breaker opens
    cache.invalidate_tags("t")  # missed by the victim: fenced on the peer and the witness
    peer.stop()  # the peer and what it was told are gone
    victim.resume()
    time.sleep(0.6)
    assert cache.get_many(keys) == {}
    assert policy_count(cache, "fenced", victim.url) == 1


@pytest.mark.django_db(transaction=True)
def test_with_a_witness__a_lone_partition_that_cannot_lock__still_lets_the_save_commit(
    model_cache, django_assert_num_queries
):
    (server,) = model_cache(1, WITNESS="database", BREAKER_FAILURES=1)
    product = Product.objects.create(name="witnessed", version=1)
    assert get_object(Product, product.pk).version == 1
    with django_assert_num_queries(0):
        assert get_object(Product, product.pk).version == 1  # cached, and trusted
    server.pause()
    assert caches["default"].get("anything") is None  # times out: the breaker opens
    product.version = 2
    product.save()  # the lock is not even sent; the miss is recorded in the database
    server.resume()
    time.sleep(0.6)
    assert Product.objects.get(pk=product.pk).version == 2
    assert get_object(Product, product.pk).version == 2  # the old entry was dropped


def test_a_witness_that_cannot_be_reached__leaves_the_invalidation_incomplete(
    clean_redis_servers, make_cache
):
    """No database access here (pytest-django blocks it): the witness fails."""
    server = clean_redis_servers[0]
    cache = make_cache([server.url], WITNESS="database", BREAKER_FAILURES=1, **FAST)
    server.pause()
    with pytest.raises(InvalidationIncomplete):
        cache.invalidate_tags("t")
    server.resume()
