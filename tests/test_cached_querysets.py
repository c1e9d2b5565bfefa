"""cached_queryset() keyed by the whole queryset and tagged with every model it reads.

Prefetches, row shapes and Prefetch querysets each make a different entry; a
change to a prefetched row invalidates the result that holds it. Real Redis.
"""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db.models import Prefetch

from django_tiercache import cached_queryset
from tests.testapp.models import Book, Label, Shelf

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


@pytest.fixture
def shelf():
    shelf = Shelf.objects.create(name="s")
    label = Label.objects.create(name="classic")
    book = Book.objects.create(title="t", shelf=shelf)
    book.readers.add(label)
    return shelf


def test_a_prefetch__is_not_served_the_entry_of_the_query_without_it(
    shelf, django_assert_num_queries
):
    plain = cached_queryset(Shelf.objects.all())
    assert "books" not in getattr(plain[0], "_prefetched_objects_cache", {})
    rows = cached_queryset(Shelf.objects.prefetch_related("books"))
    with django_assert_num_queries(0):
        assert [b.title for b in rows[0].books.all()] == ["t"]  # prefetched, not queried


def test_a_change_to_a_prefetched_row__invalidates_the_result(shelf, django_assert_num_queries):
    def titles():
        rows = cached_queryset(Shelf.objects.prefetch_related("books__readers"))
        return [(b.title, [r.name for r in b.readers.all()]) for b in rows[0].books.all()]

    assert titles() == [("t", ["classic"])]
    with django_assert_num_queries(0):
        assert titles() == [("t", ["classic"])]  # served from the cache
    Book.objects.update(title="renamed")
    assert titles() == [("renamed", ["classic"])]
    Label.objects.update(name="modern")  # two relations away
    assert titles() == [("renamed", ["modern"])]


def test_row_shapes_with_the_same_sql__are_different_entries(shelf):
    assert cached_queryset(Shelf.objects.values_list("name", flat=True)) == ["s"]
    assert cached_queryset(Shelf.objects.values_list("name")) == [("s",)]
    assert cached_queryset(Shelf.objects.values("name")) == [{"name": "s"}]


def test_prefetch_querysets_and_to_attr__are_part_of_the_key(shelf):
    none = Prefetch("books", queryset=Book.objects.filter(title="nothing"), to_attr="picked")
    some = Prefetch("books", queryset=Book.objects.filter(title="t"), to_attr="picked")
    assert cached_queryset(Shelf.objects.prefetch_related(none))[0].picked == []
    assert [b.title for b in cached_queryset(Shelf.objects.prefetch_related(some))[0].picked] == [
        "t"
    ]
    other = Prefetch("books", queryset=Book.objects.filter(title="t"), to_attr="chosen")
    assert len(cached_queryset(Shelf.objects.prefetch_related(other))[0].chosen) == 1


def test_a_prefetch_path_that_names_no_relation__raises_type_error_naming_it(shelf):
    with pytest.raises(TypeError, match="'nonsense'"):
        cached_queryset(Shelf.objects.prefetch_related("nonsense"))
