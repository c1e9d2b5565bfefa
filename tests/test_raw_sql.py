# ruff: noqa: S608 - the tests build SQL from model table names, as raw SQL callers do
"""Writes no signal reports: raw SQL, and the database's own cascades, caught at the SQL level.

Each test first shows the old value served from the cache (no query), then
makes the write the ORM does not see, and reads the new state. Real Redis, the
test database (the cascade cases need PostgreSQL's catalog).
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection, transaction

from django_tiercache import cached_queryset, get_object
from django_tiercache.orm import raw_sql
from tests.testapp.models import Book, Product, Shelf

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="database cascades: PostgreSQL's catalog"
)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


def cached_name(pk, django_assert_num_queries):
    name = get_object(Product, pk).name
    with django_assert_num_queries(0):
        assert get_object(Product, pk).name == name  # served from the cache
    return name


def run(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_raw_update__invalidates_the_rows_and_query_results(django_assert_num_queries):
    product = Product.objects.create(name="before")
    assert cached_name(product.pk, django_assert_num_queries) == "before"
    listed = cached_queryset(Product.objects.filter(pk=product.pk).values_list("name", flat=True))
    assert listed == ["before"]
    run(f"UPDATE {Product._meta.db_table} SET name = %s WHERE id = %s", ["after", product.pk])
    assert get_object(Product, product.pk).name == "after"
    assert cached_queryset(
        Product.objects.filter(pk=product.pk).values_list("name", flat=True)
    ) == ["after"]


def test_raw_insert__is_seen_by_a_cached_missing_row_and_queries():
    listed = cached_queryset(Product.objects.values_list("name", flat=True))
    with pytest.raises(Product.DoesNotExist):
        get_object(Product, 4242)  # cached as missing
    run(
        f'INSERT INTO "{Product._meta.db_table}" (id, name, version) VALUES (%s, %s, 0)',
        [4242, "inserted"],
    )
    assert get_object(Product, 4242).name == "inserted"
    assert cached_queryset(Product.objects.values_list("name", flat=True)) == [*listed, "inserted"]


def test_raw_delete__invalidates(django_assert_num_queries):
    product = Product.objects.create(name="doomed")
    cached_name(product.pk, django_assert_num_queries)
    run(f"delete from {Product._meta.db_table} where id = %s", [product.pk])
    with pytest.raises(Product.DoesNotExist):
        get_object(Product, product.pk)


def test_raw_truncate__invalidates(django_assert_num_queries):
    if connection.vendor != "postgresql":
        pytest.skip("TRUNCATE: PostgreSQL")
    product = Product.objects.create(name="truncated")
    cached_name(product.pk, django_assert_num_queries)
    run(f"TRUNCATE TABLE {Product._meta.db_table} CASCADE")
    with pytest.raises(Product.DoesNotExist):
        get_object(Product, product.pk)


def test_raw_update_in_a_transaction__invalidates_at_commit(django_assert_num_queries):
    product = Product.objects.create(name="before")
    cached_name(product.pk, django_assert_num_queries)
    with transaction.atomic():
        run(f"UPDATE {Product._meta.db_table} SET name = 'after' WHERE id = {product.pk}")
    assert get_object(Product, product.pk).name == "after"


def test_raw_update_rolled_back__leaves_the_entry_correct(django_assert_num_queries):
    product = Product.objects.create(name="kept")
    cached_name(product.pk, django_assert_num_queries)
    with pytest.raises(RuntimeError), transaction.atomic():
        run(f"UPDATE {Product._meta.db_table} SET name = 'never' WHERE id = {product.pk}")
        raise RuntimeError
    assert get_object(Product, product.pk).name == "kept"


def test_selects__invalidate_nothing(django_assert_num_queries):
    product = Product.objects.create(name="read")
    cached_name(product.pk, django_assert_num_queries)
    run(f"SELECT name FROM {Product._meta.db_table} WHERE name = 'update'")
    if connection.vendor == "postgresql":
        with transaction.atomic():
            run(f"SELECT id FROM {Product._meta.db_table} FOR UPDATE")
    with django_assert_num_queries(0):
        assert get_object(Product, product.pk).name == "read"


def test_orm_saves__are_not_invalidated_twice(monkeypatch):
    caught = []
    tags = raw_sql._tags
    monkeypatch.setattr(raw_sql, "_tags", lambda models: (caught.append(models), tags(models))[1])
    product = Product.objects.create(name="orm")
    product.name = "orm2"
    product.save()
    Product.objects.filter(pk=product.pk).update(version=2)
    Product.objects.filter(pk=product.pk).delete()
    assert caught == []  # the signals and wrapped QuerySet methods covered them
    run(f"UPDATE {Product._meta.db_table} SET version = 3")
    assert caught == [{Product}]


@postgresql_only
def test_a_database_cascade__invalidates_the_rows_it_deletes(django_assert_num_queries):
    table, parent = Book._meta.db_table, Shelf._meta.db_table
    run(
        f"ALTER TABLE {table} ADD CONSTRAINT book_shelf_db_cascade FOREIGN KEY (shelf_id) "
        f"REFERENCES {parent} (id) ON DELETE CASCADE"
    )
    raw_sql.forget_cascades()
    try:
        shelf = Shelf.objects.create(name="s")
        book = Book.objects.create(title="t", shelf=shelf)
        get_object(Book, book.pk)
        with django_assert_num_queries(0):
            assert get_object(Book, book.pk).title == "t"
        run(f"DELETE FROM {parent} WHERE id = %s", [shelf.pk])  # the database deletes the book
        with pytest.raises(Book.DoesNotExist):
            get_object(Book, book.pk)
    finally:
        run(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS book_shelf_db_cascade")
        raw_sql.forget_cascades()


@postgresql_only
def test_the_cascade_map__follows_chains_of_cascades():
    run("CREATE TABLE tc_a (id int PRIMARY KEY)")
    run("CREATE TABLE tc_b (id int PRIMARY KEY, a int REFERENCES tc_a ON DELETE CASCADE)")
    run("CREATE TABLE tc_c (id int PRIMARY KEY, b int REFERENCES tc_b ON DELETE SET NULL)")
    raw_sql.forget_cascades()
    try:
        assert raw_sql.cascades("default")["tc_a"] == {"tc_b", "tc_c"}
    finally:
        run("DROP TABLE tc_c, tc_b, tc_a")
        raw_sql.forget_cascades()
