"""The two-databases correctness cases: a registered model written on a second database
alias ("other": another database on the same PostgreSQL server, or another SQLite
database), read through get_object and cached_queryset.

Entries are keyed by model and pk (get_object) or by the whole queryset, its
database included (cached_queryset), and tags name models, not databases: a write
on either database invalidates the model's entries on both (a miss more, never a
stale read). Each case asserts 0 stale reads.
"""

from __future__ import annotations

import threading

import pytest
from django.core.cache import cache
from django.db import connection, connections, transaction

from django_tiercache import cached_queryset, get_object, write_through
from django_tiercache.orm.cache_aside import object_key
from tests.testapp.models import Product

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])

OTHER = "other"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@pytest.fixture
def products_on_other(settings):
    """Product's reads and writes routed to "other" (get_object loads from there)."""
    settings.DATABASE_ROUTERS = ["tests.routers.ProductsOnOther"]


def names_on_other(pk):
    return Product.objects.using(OTHER).filter(pk=pk).values_list("name", flat=True)


def test_writes_on_the_second_database__are_seen_by_its_cached_querysets_and_not_by_the_first():
    mine = Product.objects.create(name="default-row")
    theirs = Product.objects.using(OTHER).create(pk=mine.pk, name="other-0")  # the same pk
    on_default = Product.objects.filter(pk=mine.pk).values_list("name", flat=True)
    stale = 0

    def check(expected):
        nonlocal stale
        stale += cached_queryset(names_on_other(theirs.pk)) != expected
        stale += cached_queryset(on_default) != ["default-row"]  # same SQL, the other database
        stale += get_object(Product, mine.pk).name != "default-row"  # never the other's row

    for n in range(1, 31):
        check([f"other-{n - 1}"])  # cached
        if n % 3 == 0:
            theirs.name = f"other-{n}"
            theirs.save(using=OTHER)
        elif n % 3 == 1:
            Product.objects.using(OTHER).filter(pk=theirs.pk).update(name=f"other-{n}")
        else:
            seen = []
            with transaction.atomic(using=OTHER):
                transaction.on_commit(
                    lambda seen=seen: seen.append(cached_queryset(names_on_other(theirs.pk))),
                    using=OTHER,
                )
                Product.objects.using(OTHER).filter(pk=theirs.pk).update(name=f"other-{n}")
            stale += seen != [[f"other-{n}"]]
        check([f"other-{n}"])
    Product.objects.using(OTHER).filter(pk=theirs.pk).delete()
    check([])
    assert stale == 0


def test_a_model_routed_to_the_second_database__readers_never_see_older_than_committed(
    products_on_other,
):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers (SQLite locks the whole database)")
    product = Product.objects.create(name="v", version=0)
    assert Product.objects.using(OTHER).filter(pk=product.pk).exists()  # routed there
    committed, done = [0], threading.Event()

    def write():
        try:
            row = Product.objects.get(pk=product.pk)
            for version in range(1, 201):
                row.version = version
                row.save(update_fields=["version"])
                committed[0] = version  # after the commit (autocommit, on "other")
        finally:
            done.set()
            connections.close_all()

    writer = threading.Thread(target=write)
    writer.start()
    stale = reads = 0
    while not done.is_set() and reads < 20_000:
        floor = committed[0]
        stale += get_object(Product, product.pk).version < floor
        reads += 1
    writer.join(60)
    assert get_object(Product, product.pk).version == 200
    assert stale == 0 and reads > 0


def test_a_model_routed_to_the_second_database__on_commit_hooks_and_raw_sql_see_the_commit(
    products_on_other,
):
    product = Product.objects.create(name="before", version=0)
    get_object(Product, product.pk)
    seen = []
    with transaction.atomic(using=OTHER):
        transaction.on_commit(
            lambda: seen.append(get_object(Product, product.pk).name), using=OTHER
        )
        product.name = "after"
        product.save()
    assert seen == ["after"]
    get_object(Product, product.pk)
    with connections[OTHER].cursor() as cursor:
        cursor.execute("UPDATE testapp_product SET version = 7 WHERE id = %s", [product.pk])
    assert get_object(Product, product.pk).version == 7


def test_a_transaction_on_the_second_database__never_fills_the_cache_with_its_writes(
    products_on_other,
):
    product = Product.objects.create(name="committed")
    get_object(Product, product.pk)

    class RolledBack(Exception):
        pass

    with pytest.raises(RolledBack), transaction.atomic(using=OTHER):
        product.name = "never-committed"
        product.save()
        assert get_object(Product, product.pk).name == "never-committed"  # its own write
        assert cache.get(object_key(Product, product.pk)) is None  # not cached
        raise RolledBack
    assert get_object(Product, product.pk).name == "committed"


def test_a_write_on_the_second_database_inside_a_transaction_on_the_first__is_seen_at_once(
    products_on_other,
):
    """The write commits on "other" as it runs (autocommit there): its invalidation
    must not wait for the transaction on "default", which does not hold it."""
    product = Product.objects.create(name="v0")
    get_object(Product, product.pk)
    seen = {}
    with transaction.atomic():  # on "default"
        product.name = "v1"
        product.save()  # routed to "other"

        def read_elsewhere():
            try:
                seen["other thread"] = get_object(Product, product.pk).name
            finally:
                connections.close_all()

        reader = threading.Thread(target=read_elsewhere)
        reader.start()
        reader.join(30)
        seen["this thread"] = get_object(Product, product.pk).name
    assert seen == {"other thread": "v1", "this thread": "v1"}


def test_a_lagging_read_replica__never_reaches_the_cache(settings):
    """The router reads Product from "other", standing for a replica that has not
    received the writes yet, except the cache's own loads (hint tiercache_load):
    those go to the primary, so no miss caches the replica's older row."""
    settings.DATABASE_ROUTERS = ["tests.routers.LaggingReplicaOnOther"]
    product = Product.objects.create(name="v", version=0)  # on the primary
    Product.objects.using(OTHER).create(pk=product.pk, name="v", version=0)  # replicated once
    listed = Product.objects.filter(pk=product.pk).values_list("version", flat=True)
    stale = 0
    for version in range(1, 21):
        product.version = version
        product.save(update_fields=["version"])
        assert Product.objects.get(pk=product.pk).version == 0  # the replica lags
        stale += get_object(Product, product.pk).version != version  # a miss, then hits
        stale += get_object(Product, product.pk).version != version
        stale += cached_queryset(listed) != [version]
    product.version = 100
    write_through.save(product, update_fields=["version"])  # fills the entry after the commit
    stale += cache.get(object_key(Product, product.pk)).version != 100
    assert stale == 0
