"""write_behind.save/delete/flush: read-your-writes, coalescing, order, mixed paths.

Real Redis (the shared test database, a journal per test), real database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection, transaction

from django_tiercache import get_object, write_behind
from django_tiercache.exceptions import NotRegistered
from django_tiercache.write_behind.journal import get_journal
from tests.testapp.models import Counter, Product, Unregistered

pytestmark = pytest.mark.django_db(transaction=True)
REPO_ROOT = Path(__file__).resolve().parent.parent


def in_db(pk):
    return Counter.objects.filter(pk=pk).values_list("hits", "note").first()


def test_save__get_object_sees_the_new_state_before_the_database(journal_prefix):
    row = Counter.objects.create(name="a", hits=1)
    row.hits = 42
    write_behind.save(row)
    assert in_db(row.pk) == (1, "")
    assert get_object(Counter, row.pk).hits == 42
    assert write_behind.flush() == 1
    assert in_db(row.pk) == (42, "")
    assert write_behind.stats()["pending"] == 0


def test_cache_clear__keeps_pending_writes(journal_prefix):
    """clear() empties the cache's database, where the journal lives: pending
    writes are not cache content and must survive it."""
    from django.core.cache import cache

    row = Counter.objects.create(name="cleared", hits=1)
    row.hits = 7
    write_behind.save(row)
    cache.set("content", 1)
    cache.clear()
    assert cache.get("content") is None
    assert get_object(Counter, row.pk).hits == 7
    assert write_behind.flush() == 1
    assert in_db(row.pk) == (7, "")


def test_cache_clear__works_where_write_behind_names_no_cache(settings):
    """A project that does not use write-behind may have no "default" cache."""
    from django.core.cache import caches

    settings.CACHES = {"other": settings.CACHES["default"]}
    caches["other"].set("content", 1)
    caches["other"].clear()
    assert caches["other"].get("content") is None


def test_save__a_new_row_with_a_pk_is_created_by_the_drain(journal_prefix):
    write_behind.save(Counter(pk=900, name="new", hits=3))
    assert get_object(Counter, 900).name == "new"
    write_behind.flush()
    assert in_db(900) == (3, "")


def test_save__many_saves_of_a_row_become_one_write_of_the_latest(
    journal_prefix, django_assert_max_num_queries
):
    row = Counter.objects.create(name="b")
    for hits in range(1, 101):
        row.hits = hits
        write_behind.save(row)
    assert write_behind.stats()["pending"] == 1
    # Lock the row, one upsert (and the savepoint around it), nothing per save; on
    # PostgreSQL also SET CONSTRAINTS and the advisory locks (one statement each).
    with django_assert_max_num_queries(8):
        assert write_behind.flush() == 1
    assert in_db(row.pk) == (100, "")


def test_update_fields__partial_saves_merge_and_leave_other_fields_alone(journal_prefix):
    row = Counter.objects.create(name="c", hits=1, note="old")
    row.hits = 5
    write_behind.save(row, update_fields=["hits"])
    Counter.objects.filter(pk=row.pk).update(name="renamed")  # lands the pending hits first
    row.note = "new"
    write_behind.save(row, update_fields=["note"])
    assert get_object(Counter, row.pk).name == "renamed"
    write_behind.flush()
    assert Counter.objects.values_list("name", "hits", "note").get(pk=row.pk) == (
        "renamed",
        5,
        "new",
    )


def test_delete__after_a_save_wins_and_a_save_after_it_recreates(journal_prefix):
    row = Counter.objects.create(name="d", hits=1)
    row.hits = 2
    write_behind.save(row)
    write_behind.delete(row)
    with pytest.raises(Counter.DoesNotExist):
        get_object(Counter, row.pk)
    write_behind.flush()
    assert in_db(row.pk) is None
    other = Counter.objects.create(name="e", hits=1)
    write_behind.delete(other)
    other.hits = 9
    write_behind.save(other)
    assert get_object(Counter, other.pk).hits == 9
    write_behind.flush()
    assert in_db(other.pk) == (9, "")


def test_update_fields__of_a_row_pending_deletion_is_refused(journal_prefix):
    row = Counter.objects.create(name="f")
    write_behind.delete(row)
    with pytest.raises(write_behind.InvalidWrite, match="deletes it"):
        write_behind.save(row, update_fields=["hits"])


def test_read_your_writes__holds_in_another_process(journal_prefix, settings):
    if connection.vendor == "sqlite":
        pytest.skip("another process cannot see an in-memory SQLite database")
    row = Counter.objects.create(name="g", hits=1)
    row.hits = 77
    write_behind.save(row)
    code = (
        "import django; django.setup()\n"
        "from django_tiercache import get_object\n"
        "from tests.testapp.models import Counter\n"
        f"print(get_object(Counter, {row.pk}).hits)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.write_behind_worker_settings",
        "WB_KEY_PREFIX": journal_prefix,
        "WB_DB_NAME": connection.settings_dict["NAME"],
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "77"
    assert in_db(row.pk) == (1, "")


# -- mixed paths: a direct write lands after the pending state, never before --


def test_direct_save__lands_on_top_of_an_older_pending_state(journal_prefix):
    row = Counter.objects.create(name="h", hits=1)
    row.hits = 10
    write_behind.save(row)
    direct = Counter.objects.get(pk=row.pk)
    direct.hits = 20
    direct.save()
    write_behind.flush()
    assert in_db(row.pk) == (20, "")
    assert write_behind.stats()["pending"] == 0


def test_queryset_update__lands_on_top_of_older_pending_states(journal_prefix):
    rows = [Counter.objects.create(name=f"i{n}", hits=1) for n in range(3)]
    for row in rows:
        row.hits = 10
        write_behind.save(row, update_fields=["hits"])
    Counter.objects.filter(name__startswith="i").update(note="direct")
    Counter.objects.filter(pk=rows[0].pk).update(hits=99)
    write_behind.flush()
    assert sorted(Counter.objects.values_list("hits", "note")) == [
        (10, "direct"),
        (10, "direct"),
        (99, "direct"),
    ]


def test_direct_save__rolled_back_leaves_the_pending_state_to_drain(journal_prefix):
    row = Counter.objects.create(name="j", hits=1)
    row.hits = 10
    write_behind.save(row)
    with pytest.raises(RuntimeError), transaction.atomic():
        Counter.objects.filter(pk=row.pk).update(hits=50)
        raise RuntimeError("roll back")
    assert in_db(row.pk) == (1, "")
    # The rolled-back writer's claim runs out (here: at once) and the state drains.
    journal = get_journal()
    journal.client.zadd(journal.keys["inflight"], {f"testapp.counter:{row.pk}": 0})
    assert write_behind.flush() == 1
    assert in_db(row.pk) == (10, "")


# -- bad input: a clear error, nothing queued --


def test_save__refuses_models_not_declared_for_write_behind(journal_prefix):
    with pytest.raises(NotRegistered, match="write_behind=True"):
        write_behind.save(Product.objects.create(name="p"))
    with pytest.raises(NotRegistered, match="register"):
        write_behind.save(Unregistered.objects.create(name="u"))
    assert write_behind.stats()["pending"] == 0


def test_save__refuses_an_instance_without_a_primary_key(journal_prefix):
    with pytest.raises(write_behind.InvalidWrite, match="no primary key"):
        write_behind.save(Counter(name="k"))
    assert write_behind.stats()["pending"] == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("note", object(), "cannot be queued"), ("hits", "many", "not a valid value")],
)
def test_save__refuses_values_it_cannot_carry(journal_prefix, field, value, message):
    row = Counter.objects.create(name="l")
    setattr(row, field, value)
    with pytest.raises(write_behind.InvalidWrite, match=message):
        write_behind.save(row)
    assert write_behind.stats()["pending"] == 0


def test_ack__a_row_saved_during_its_drain_stays_pending_with_the_newer_state(journal_prefix):
    from django_tiercache.write_behind import drain, settings

    row = Counter.objects.create(name="m", hits=1)
    row.hits = 2
    write_behind.save(row)
    journal = get_journal()
    claimed = journal.claim("drainer", 10, 30)  # a drain has read version 2 ...
    row.hits = 3
    write_behind.save(row)  # ... when a newer save comes
    drain.apply(journal, "drainer", claimed, settings.get())
    assert in_db(row.pk) == (2, "")
    assert write_behind.stats()["pending"] == 1
    assert get_object(Counter, row.pk).hits == 3
    assert write_behind.flush() == 1
    assert in_db(row.pk) == (3, "")


def test_claim__a_stale_drainer_whose_claim_was_taken_writes_nothing(journal_prefix):
    from django_tiercache.write_behind import drain, settings

    row = Counter.objects.create(name="n", hits=1)
    row.hits = 2
    write_behind.save(row)
    journal = get_journal()
    stale = journal.claim("slow", 10, 0)  # its claim runs out at once
    row.hits = 3
    write_behind.save(row)
    assert write_behind.flush() == 1  # another drain takes the row back and writes 3
    outcome = drain.apply(journal, "slow", stale, settings.get())
    assert outcome.written == 0
    assert in_db(row.pk) == (3, "")


def test_a_lost_journal__is_noticed_and_reported(journal_prefix, caplog):
    """The journal is durable state (it needs persistence and a volatile-* policy):
    if Redis loses it anyway, the next save notices and says so, never silently."""
    row = Counter.objects.create(name="lost", hits=1)
    row.hits = 2
    write_behind.save(row)
    # What an eviction or a flush does, on whatever server holds the journal.
    get_journal().client.delete(f"{{{journal_prefix}}}:epoch")
    row.hits = 3
    write_behind.save(row)
    assert "journal" in caplog.text and "lost" in caplog.text
    assert write_behind.stats()["journal_lost"] == 1
