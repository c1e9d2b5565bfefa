"""Write-behind under failure: bad rows, dead letters, database or Redis down, a full journal.

Real Redis, real database; the Celery worker cases are in test_write_behind_celery.py.
"""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from django_tiercache import write_behind
from django_tiercache.write_behind.journal import get_journal
from tests.redis_servers import closed_port_url
from tests.testapp.models import Counter
from tests.write_behind_support import clashing_batch, configure, hits

pytestmark = pytest.mark.django_db(transaction=True)


def test_failing_row__is_retried_then_dead_lettered_while_the_rest_lands(journal_prefix):
    a, b, c = clashing_batch()
    assert write_behind.flush() == 2
    assert (hits(a.pk), hits(b.pk), hits(c.pk)) == (1, 0, 3)
    figures = write_behind.stats()
    assert (figures["retrying"], figures["pending"], figures["failed"]) == (1, 1, 1)
    write_behind.flush()  # MAX_RETRIES is 2 here: a second failure, still retrying
    assert write_behind.stats()["dead_letters"] == 0
    write_behind.flush()  # the third attempt fails: a dead letter
    figures = write_behind.stats()
    assert (figures["dead_letters"], figures["pending"], figures["retrying"]) == (1, 0, 0)
    (letter,) = get_journal().dead_letters().values()
    assert "IntegrityError" in letter["error"] and letter["attempts"] == 3


def test_failing_row__waits_for_its_backoff(journal_prefix, settings):
    configure(settings, RETRY_BACKOFF=3600)
    clashing_batch()
    write_behind.flush()
    assert write_behind.flush() == 0  # not due for an hour
    assert write_behind.stats()["retrying"] == 1


def test_dead_letters__retried_land_once_the_cause_is_fixed_or_are_dropped(journal_prefix):
    a, b, _ = clashing_batch()
    for _ in range(3):
        write_behind.flush()
    journal = get_journal()
    assert list(journal.dead_letters()) == [f"testapp.counter:{b.pk}"]
    Counter.objects.filter(pk=a.pk).update(name="a2")
    assert journal.retry_dead() == 1
    assert write_behind.flush() == 1
    assert Counter.objects.get(pk=b.pk).name == "a"
    clashing_again = Counter.objects.get(pk=a.pk)
    clashing_again.name = "a"
    write_behind.save(clashing_again)
    for _ in range(3):
        write_behind.flush()
    assert journal.drop_dead() == 1
    assert write_behind.stats()["dead_letters"] == 0
    assert Counter.objects.get(pk=a.pk).name == "a2"


def test_dead_letter_retry__never_overwrites_a_newer_pending_write(journal_prefix):
    a, b, _ = clashing_batch()
    for _ in range(3):
        write_behind.flush()
    b.name, b.hits = "b-newer", 50
    write_behind.save(b)
    get_journal().retry_dead()
    write_behind.flush()
    assert Counter.objects.values_list("name", "hits").get(pk=b.pk) == ("b-newer", 50)


def test_database_down__writes_wait_and_land_when_it_returns(journal_prefix):
    if connection.vendor == "sqlite":
        pytest.skip("an in-memory SQLite database cannot go down")
    row = Counter.objects.create(name="down")
    row.hits = 7
    write_behind.save(row)
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = closed_port_url().rsplit(":", 1)[1].split("/")[0]
    try:
        with pytest.raises(OperationalError):
            write_behind.flush()
        with pytest.raises(OperationalError):
            write_behind.flush()
        figures = write_behind.stats()
        assert (figures["pending"], figures["in_flight"], figures["retrying"]) == (1, 0, 0)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert write_behind.flush() == 1
    assert hits(row.pk) == 7


def test_redis_down__save_falls_back_to_the_database(journal_prefix, settings):
    row = Counter.objects.create(name="fallback")
    configure(settings, REDIS_URL=closed_port_url())
    row.hits = 8
    assert write_behind.save(row) is None
    assert hits(row.pk) == 8
    assert write_behind.api._local_counts["fallback_saves"] >= 1


def test_redis_down__save_raises_when_configured_to(journal_prefix, settings):
    row = Counter.objects.create(name="raise")
    configure(settings, REDIS_URL=closed_port_url(), ON_UNAVAILABLE="raise")
    row.hits = 8
    with pytest.raises(write_behind.WriteBehindUnavailable, match="unreachable"):
        write_behind.save(row)
    assert hits(row.pk) == 0


def test_max_pending__more_rows_fall_back_to_the_database_and_are_counted(journal_prefix, settings):
    configure(settings, MAX_PENDING=2)
    rows = [Counter.objects.create(name=f"bp{n}") for n in range(3)]
    for row in rows:
        row.hits = 5
    assert write_behind.save(rows[0]) and write_behind.save(rows[1])
    assert write_behind.save(rows[2]) is None  # full: saved at once
    assert [hits(r.pk) for r in rows] == [0, 0, 5]
    rows[0].hits = 6
    assert write_behind.save(rows[0])  # already pending: coalesced, not refused
    assert write_behind.stats()["backpressure"] == 1
