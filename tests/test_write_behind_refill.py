"""A landed batch leaves get_object's entries holding what it wrote, never an older state.

Real Redis (the test cache and a journal per test), real database.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

from django_tiercache import get_object, write_behind
from django_tiercache.backend import tier_cache
from django_tiercache.orm.cache_aside import object_key
from django_tiercache.signals import tags_invalidated
from tests.testapp.models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


def read_then_save(**changes):
    """A row get_object has cached, then a pending write-behind save of it."""
    row = Counter.objects.create(name="read", hits=1)
    assert get_object(Counter, row.pk).hits == 1
    for name, value in changes.items():
        setattr(row, name, value)
    return row


def test_drain__get_object_reads_the_written_state_without_a_query(
    journal_prefix, django_assert_num_queries
):
    row = read_then_save(hits=42, note="drained")
    write_behind.save(row)
    assert write_behind.flush() == 1
    with django_assert_num_queries(0):
        found = get_object(Counter, row.pk)
    assert (found.hits, found.note) == (42, "drained")


def test_drain__of_a_partial_save_puts_back_the_whole_row(
    journal_prefix, django_assert_num_queries
):
    row = read_then_save(hits=7)
    write_behind.save(row, update_fields=["hits"])
    write_behind.flush()
    with django_assert_num_queries(0):
        found = get_object(Counter, row.pk)
    assert (found.name, found.hits) == ("read", 7)


def test_drain__of_a_delete_caches_the_row_as_missing(journal_prefix, django_assert_num_queries):
    row = read_then_save()
    write_behind.delete(row)
    write_behind.flush()
    with django_assert_num_queries(0), pytest.raises(Counter.DoesNotExist):
        get_object(Counter, row.pk)


def test_drain__caches_no_row_nobody_read(journal_prefix):
    row = Counter.objects.create(name="unread")
    row.hits = 3
    write_behind.save(row)
    write_behind.flush()
    assert tier_cache("default").get_many([object_key(Counter, row.pk)]) == {}


def test_drain__a_direct_write_right_after_its_commit_is_never_hidden(journal_prefix):
    """The direct write lands between the drain's commit (its invalidation is
    announced) and the put-back: the cache must hold it, not the drained state."""
    row = read_then_save(hits=42)
    write_behind.save(row)
    done = []

    def direct_write(sender, **kwargs):
        if sender is Counter and not done:
            done.append(True)
            Counter.objects.filter(pk=row.pk).update(hits=99)

    tags_invalidated.connect(direct_write)
    try:
        write_behind.flush()
    finally:
        tags_invalidated.disconnect(direct_write)
    assert done
    assert Counter.objects.get(pk=row.pk).hits == 99
    assert get_object(Counter, row.pk).hits == 99


def test_drain__a_direct_write_during_the_put_back_read_keeps_the_read_out(journal_prefix):
    """Another connection writes the row after the put-back has read it and before it
    stores: the read state is older than the row, and must not be cached."""
    if connection.vendor == "sqlite":
        pytest.skip("SQLite's shared in-memory database locks the table for the open read")
    row = read_then_save(hits=42)
    write_behind.save(row)
    done = []

    def direct_write_from_another_connection():
        try:
            Counter.objects.filter(pk=row.pk).update(hits=99)
        finally:
            connections.close_all()

    def after_the_put_back_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        is_put_back = sql.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in sql
        if is_put_back and not connection.in_atomic_block and not done:
            done.append(True)
            writer = threading.Thread(target=direct_write_from_another_connection)
            writer.start()
            writer.join()
        return result

    with connection.execute_wrapper(after_the_put_back_read):
        assert write_behind.flush() == 1
    assert done
    assert get_object(Counter, row.pk).hits == 99
