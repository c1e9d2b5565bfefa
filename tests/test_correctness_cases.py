"""The ORM-cache correctness cases, each read through get_object or cached_queryset.

Our own version of the public cases: a reader in autocommit while a writer
commits, on_commit hooks reading the cache, F() and subquery updates, raw SQL
and database cascades (tests/test_raw_sql.py), a REPEATABLE READ reader. Each
asserts 0 stale reads. Real Redis; PostgreSQL where the case needs it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from django.core.cache import cache
from django.db import connection, connections, transaction
from django.db.models import Exists, F, OuterRef, Subquery, Value
from django.db.models.functions import Concat, Greatest, Now

from django_tiercache import cached_queryset, get_object
from tests.testapp.models import Category, Product, Shelf, Stamp

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="isolation levels and concurrent writers"
)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@postgresql_only
def test_reader_in_autocommit_while_a_writer_commits__never_reads_older_than_committed():
    product = Product.objects.create(name="v", version=0)
    committed = [0]
    done = threading.Event()

    def write():
        try:
            row = Product.objects.get(pk=product.pk)
            for version in range(1, 201):
                row.version = version
                row.save(update_fields=["version"])
                committed[0] = version  # after the commit (autocommit)
        finally:
            done.set()
            connections.close_all()

    writer = threading.Thread(target=write)
    writer.start()
    stale = reads = 0
    while not done.is_set() and reads < 20_000:
        floor = committed[0]
        if get_object(Product, product.pk).version < floor:
            stale += 1
        reads += 1
    writer.join(60)
    assert get_object(Product, product.pk).version == 200
    assert stale == 0 and reads > 0


@pytest.mark.parametrize("hook_first", [True, False], ids=["hook-before-save", "hook-after-save"])
def test_an_on_commit_hook__reads_the_committed_state(hook_first):
    product = Product.objects.create(name="before")
    get_object(Product, product.pk)  # cached
    seen = []

    def hook():
        seen.append(get_object(Product, product.pk).name)
        seen.append(cached_queryset(Product.objects.filter(pk=product.pk).values_list("name")))

    with transaction.atomic():
        if hook_first:
            transaction.on_commit(hook)
        product.name = "after"
        product.save()
        if not hook_first:
            transaction.on_commit(hook)
    assert seen == ["after", [("after",)]]


def test_f_expression_saves_and_updates__are_seen():
    product = Product.objects.create(name="f", version=1)
    get_object(Product, product.pk)
    Product.objects.filter(pk=product.pk).update(version=F("version") + 1)
    assert get_object(Product, product.pk).version == 2
    product.version = F("version") + 10
    product.save(update_fields=["version"])
    assert get_object(Product, product.pk).version == 12


def test_database_functions_and_subqueries_in_updates__are_seen():
    category = Category.objects.create(name="books")
    product = Product.objects.create(name="p", category=category)
    listed = Product.objects.filter(category__name="books").values_list("name", flat=True)
    assert cached_queryset(listed) == ["p"]
    get_object(Product, product.pk)
    Product.objects.filter(pk=product.pk).update(name=Concat(F("name"), Value("-renamed")))
    assert get_object(Product, product.pk).name == "p-renamed"
    in_books = Category.objects.filter(name="books").values("pk")
    Product.objects.filter(category__in=Subquery(in_books)).update(name="sub")
    assert cached_queryset(listed) == ["sub"]
    Category.objects.filter(pk=category.pk).update(name="films")
    assert cached_queryset(listed) == []  # a change to a joined model's rows


LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def stamp_all_with_now(rows, source):
    """The Now() writes: one row, rows a subquery picks, Now() nested in Greatest(),
    a value another row's subquery reads, and a save() with Now() as the value."""
    first, second, third, fourth, fifth = rows
    Stamp.objects.filter(pk=first.pk).update(updated=Now())
    picked = Stamp.objects.filter(name=second.name).values("pk")
    Stamp.objects.filter(pk__in=Subquery(picked)).update(updated=Now())
    Stamp.objects.filter(pk=third.pk).update(updated=Greatest(F("updated"), Now()))
    Stamp.objects.filter(pk=source.pk).update(updated=Now())
    from_source = Stamp.objects.filter(pk=source.pk).values("updated")[:1]
    Stamp.objects.filter(pk=fourth.pk).update(updated=Subquery(from_source))
    fifth.updated = Now()
    fifth.save(update_fields=["updated"])


def test_now_and_subquery_updates__are_seen_through_get_object():
    rows = [Stamp.objects.create(name=f"s{n}", updated=LONG_AGO) for n in range(5)]
    source = Stamp.objects.create(name="source", updated=LONG_AGO)
    stamped = Stamp.objects.filter(updated__gt=LONG_AGO).values_list("name", flat=True)
    stale = 0
    for _ in range(20):
        Stamp.objects.update(updated=LONG_AGO)
        assert [get_object(Stamp, row.pk).updated for row in rows] == [LONG_AGO] * 5  # cached
        assert cached_queryset(stamped) == []
        stamp_all_with_now(rows, source)
        for row in rows:
            in_database = Stamp.objects.get(pk=row.pk).updated
            assert in_database > LONG_AGO
            stale += get_object(Stamp, row.pk).updated != in_database
        stale += sorted(cached_queryset(stamped)) != sorted([*(r.name for r in rows), "source"])
    assert stale == 0


def test_now_updates_in_a_transaction__are_seen_after_the_commit():
    row = Stamp.objects.create(name="t", updated=LONG_AGO)
    get_object(Stamp, row.pk)
    with transaction.atomic():
        Stamp.objects.filter(pk=row.pk).update(updated=Now())
        in_transaction = Stamp.objects.get(pk=row.pk).updated
        assert get_object(Stamp, row.pk).updated == in_transaction  # its own write, not cached
    assert (
        get_object(Stamp, row.pk).updated == in_transaction == Stamp.objects.get(pk=row.pk).updated
    )


@postgresql_only
def test_a_repeatable_read_reader__never_caches_its_old_snapshot_for_others():
    product = Product.objects.create(name="v1")
    in_snapshot, written, read_again = threading.Event(), threading.Event(), threading.Event()
    result = {}

    def reader():
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                result["first"] = Product.objects.get(pk=product.pk).name  # snapshot taken
                in_snapshot.set()
                written.wait(10)
                result["inside"] = get_object(Product, product.pk).name  # a miss: its snapshot
                read_again.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    assert in_snapshot.wait(10)
    product.name = "v2"
    product.save()  # committed, invalidated
    written.set()
    assert read_again.wait(10)
    thread.join(10)
    assert result["first"] == "v1"
    assert get_object(Product, product.pk).name == "v2"  # not the reader's v1


@postgresql_only
def test_a_connection_configured_for_repeatable_read__reads_but_never_fills():
    from psycopg import IsolationLevel

    product = Product.objects.create(name="v1")
    options = connection.settings_dict.setdefault("OPTIONS", {})
    connection.close()
    options["isolation_level"] = IsolationLevel.REPEATABLE_READ
    try:
        with transaction.atomic():
            assert get_object(Product, product.pk).name == "v1"  # loaded, not stored
        from django_tiercache.orm.cache_aside import object_key

        assert cache.get(object_key(Product, product.pk)) is None
        assert get_object(Product, product.pk).name == "v1"  # autocommit: stored now
        assert cache.get(object_key(Product, product.pk)) is not None
    finally:
        options.pop("isolation_level")
        connection.close()


def test_a_cached_query_filtered_by_a_subquery__sees_writes_to_the_subquerys_model():
    """The subquery's model is not related to the query's (no parent, no join): its
    writes are seen only if the subquery itself is read for tags."""
    Product.objects.create(name="novel")
    shelf = Shelf.objects.create(name="novel")
    shelved = Shelf.objects.filter(name__startswith="nov").values("name")
    by_subquery = Product.objects.filter(name__in=Subquery(shelved)).values_list("name")
    by_queryset = Product.objects.filter(name__in=shelved).values_list("name")
    exists = Shelf.objects.filter(name=OuterRef("name"))
    by_exists = Product.objects.filter(Exists(exists)).values_list("name")
    annotated = Product.objects.annotate(shelves=Subquery(exists.values("pk")[:1]))
    by_annotation = annotated.filter(shelves__isnull=False).values_list("name")
    nothing = Product.objects.filter(pk__lt=0).values_list("name")
    by_union = nothing.union(Shelf.objects.filter(name__startswith="nov").values_list("name"))
    queries = (by_subquery, by_queryset, by_exists, by_annotation, by_union)
    assert [cached_queryset(q) for q in queries] == [[("novel",)]] * 5
    Shelf.objects.filter(pk=shelf.pk).update(name="poems")  # no product row changed
    assert [cached_queryset(q) for q in queries] == [[]] * 5
