"""Write-behind writes that land once and in order: row identity, missing rows, retried
dead letters, expired claims, read-your-writes, increments, a hung journal.

Real Redis servers (one stopped with SIGSTOP for the hung journal), real database.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.db.models import F

from django_tiercache import get_object, write_behind
from django_tiercache.orm.cache_aside import object_key
from django_tiercache.write_behind import InvalidWrite, drain
from django_tiercache.write_behind.journal import get_journal
from tests.testapp.models import Badge, Counter, CounterProfile, Ticket
from tests.write_behind_support import configure, hits

pytestmark = pytest.mark.django_db(transaction=True)

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row ordering by advisory lock: PostgreSQL"
)


# -- one row, one name --


def test_a_text_pk_of_an_integer_row__is_the_same_row(journal_prefix):
    row = Counter.objects.create(name="seven")
    write_behind.save(Counter(id=str(row.pk), name="seven", hits=9))
    assert get_object(Counter, row.pk).hits == 9  # the pending write, under the int pk
    write_behind.save(Counter(id=row.pk, name="seven", hits=4))
    assert write_behind.stats()["pending"] == 1
    write_behind.flush()
    assert hits(row.pk) == 4


@pytest.mark.parametrize(
    "make, same",
    [
        (lambda: Badge(code="gold", score=3), lambda obj: Badge(code="gold", score=5)),
        (
            lambda: Ticket(id=uuid.UUID(int=7), price=Decimal("1.50")),
            lambda obj: Ticket(id=str(uuid.UUID(int=7)).upper(), price=Decimal("2.50")),
        ),
        (
            lambda: CounterProfile(counter=Counter.objects.create(name="p"), motto="a"),
            lambda obj: CounterProfile(counter_id=str(obj.pk), motto="b"),
        ),
    ],
    ids=["text", "uuid", "one-to-one"],
)
def test_every_pk_type__one_row_whatever_the_pk_spelling(journal_prefix, make, same):
    first = make()
    write_behind.save(first)
    second = same(first)
    write_behind.save(second)
    assert write_behind.stats()["pending"] == 1
    assert write_behind.flush() == 1
    model = type(first)
    landed = model.objects.get(pk=first.pk)
    field = {"badge": "score", "ticket": "price", "counterprofile": "motto"}[model._meta.model_name]
    assert getattr(landed, field) == getattr(second, field)


@pytest.mark.parametrize("pk", ["abc", float("nan"), math.inf, -math.inf])
def test_a_pk_the_field_refuses__raises_invalid_write(journal_prefix, pk):
    with pytest.raises(InvalidWrite):
        write_behind.save(Counter(id=pk, name="x"))
    assert write_behind.stats()["pending"] == 0


@pytest.mark.parametrize(
    "change",
    [
        {"hits": math.inf},
        {"hits": float("nan")},
        {"note": "x" * 51},  # max_length 50: PostgreSQL's bulk_update CAST would truncate it
        {"hits": "many"},
    ],
    ids=["inf", "nan", "too-long", "not-a-number"],
)
def test_a_value_the_database_would_refuse__raises_invalid_write_up_front(journal_prefix, change):
    row = Counter.objects.create(name="v")
    for name, value in change.items():
        setattr(row, name, value)
    with pytest.raises(InvalidWrite):
        write_behind.save(row, update_fields=list(change))
    assert write_behind.stats()["pending"] == 0


def test_a_decimal_with_too_many_digits__raises_invalid_write(journal_prefix):
    with pytest.raises(InvalidWrite):
        write_behind.save(Ticket(id=uuid.uuid4(), price=Decimal("1234.5")))


@pytest.mark.parametrize("update_fields", [[], "hits", ["hits", "nope"]])
def test_bad_update_fields__raise_invalid_write(journal_prefix, update_fields):
    row = Counter.objects.create(name="u")
    with pytest.raises(InvalidWrite):
        write_behind.save(row, update_fields=update_fields)


# -- writes that land once, in order --


def test_an_update_of_a_missing_row__becomes_a_dead_letter_with_djangos_message(journal_prefix):
    write_behind.save(Counter(id=991, name="ghost", hits=3), update_fields=["hits"])
    for _ in range(3):
        assert write_behind.flush() == 0
    letter = get_journal().dead_letters()["testapp.counter:991"]
    assert "did not affect any rows" in letter["error"]
    assert not Counter.objects.filter(pk=991).exists()


def test_a_retried_dead_save_under_a_newer_partial_one__creates_the_row(journal_prefix):
    Counter.objects.create(name="taken")
    write_behind.save(Counter(id=992, name="taken", hits=1))  # a full save; the name clashes
    for _ in range(3):
        write_behind.flush()
    assert "testapp.counter:992" in get_journal().dead_letters()
    Counter.objects.filter(name="taken").update(name="freed")
    write_behind.save(Counter(id=992, hits=7), update_fields=["hits"])  # newer, partial
    assert get_journal().retry_dead() == 1
    assert write_behind.flush() == 1
    assert Counter.objects.values_list("name", "hits").get(pk=992) == ("taken", 7)


@postgresql_only
def test_a_drain_whose_claim_expired__never_lands_an_older_version_over_a_newer_one(
    journal_prefix, settings
):
    configure(settings, CLAIM_TIMEOUT=0.2)
    write_behind.save(Counter(id=993, name="v1", hits=1))  # a row not yet in the database
    journal = get_journal()
    token = uuid.uuid4().hex
    (claimed,) = journal.claim(token, 10, 0.2)
    confirmed, release = threading.Event(), threading.Event()
    result = {}

    def stalled_drain():
        # The first drain: confirms its claim, then stalls before writing.
        drain.applying.active = True  # as drain._write_batch: a drain's own writes
        with transaction.atomic():
            drain.order_writers([claimed], "default")
            result["held"] = journal.confirm(token, [claimed])
            confirmed.set()
            release.wait(10)
            drain.write([claimed], "default")
        connection.close()

    first = threading.Thread(target=stalled_drain)
    first.start()
    assert confirmed.wait(10) and result["held"] == {claimed.row}
    write_behind.save(Counter(id=993, name="v2", hits=2))
    time.sleep(0.3)  # the first drain's claim runs out: v2 is due for another drain
    second = threading.Thread(target=lambda: (write_behind.flush(), connection.close()))
    second.start()
    assert _waits_for_an_advisory_lock()  # the second drain waits for the first's lock
    release.set()
    first.join(10)
    second.join(10)
    assert Counter.objects.values_list("name", "hits").get(pk=993) == ("v2", 2)


def _waits_for_an_advisory_lock() -> bool:
    with connection.cursor() as cursor:
        for _ in range(200):
            cursor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.05)
    return False


# -- read-your-writes --


def test_read_your_writes__a_drain_between_the_two_reads_never_shows_an_older_value(
    journal_prefix, monkeypatch
):
    from django_tiercache.backend import tier_cache

    row = Counter.objects.create(name="ryw", hits=1)
    get_object(Counter, row.pk)  # cached at hits=1
    row.hits = 2
    write_behind.save(row, update_fields=["hits"])
    cache = tier_cache("default")
    read = cache.get_or_set_many

    def read_then_drain(*args, **kwargs):
        # The cache was read; a drain in another process lands the write and drops
        # it from the journal before the pending state is applied.
        found = read(*args, **kwargs)
        write_behind.flush()
        return found

    monkeypatch.setattr(cache, "get_or_set_many", read_then_drain)
    assert cache.get(object_key(Counter, row.pk)).hits == 1  # the cache still held hits=1
    assert get_object(Counter, row.pk).hits == 2


# -- increments --


def test_increments_from_four_threads__all_land(journal_prefix):
    row = Counter.objects.create(name="hot", hits=10)

    def count():
        mine = Counter.objects.get(pk=row.pk)
        for _ in range(50):
            mine.hits = F("hits") + 1
            write_behind.save(mine, update_fields=["hits"])
        connection.close()

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert get_object(Counter, row.pk).hits == 210  # the pending delta, before any drain
    assert hits(row.pk) == 10
    assert write_behind.flush() == 1
    assert hits(row.pk) == 210


def test_an_increment_over_a_pending_value__adds_to_it(journal_prefix):
    row = Counter.objects.create(name="base", hits=1)
    row.hits = 100
    write_behind.save(row)
    row.hits = F("hits") - 3
    write_behind.save(row, update_fields=["hits"])
    write_behind.flush()
    assert hits(row.pk) == 97


def test_an_increment_landed_but_not_acknowledged__is_not_added_twice(journal_prefix):
    row = Counter.objects.create(name="once", hits=0)
    row.hits = F("hits") + 5
    write_behind.save(row, update_fields=["hits"])
    journal = get_journal()
    token = uuid.uuid4().hex
    claimed = journal.claim(token, 10, 30)
    drain._write_batch(journal, token, claimed, "default")  # committed; the drain "dies"
    journal.release(token, claimed)  # as its claim running out would
    assert hits(row.pk) == 5
    assert write_behind.flush() == 1
    assert hits(row.pk) == 5 and write_behind.stats()["pending"] == 0


def test_an_increment_without_update_fields__raises_invalid_write(journal_prefix):
    row = Counter.objects.create(name="f")
    row.hits = F("hits") + 1
    with pytest.raises(InvalidWrite):
        write_behind.save(row)
    row.hits = F("hits") * 2
    with pytest.raises(InvalidWrite):
        write_behind.save(row, update_fields=["hits"])


# -- a hung journal --


def test_a_hung_journal__costs_one_timeout_then_saves_go_direct_at_once(
    journal_prefix, settings, clean_redis_servers
):
    server = clean_redis_servers[0]
    configure(settings, REDIS_URL=server.url, SOCKET_TIMEOUT=0.3)
    journal = get_journal()
    kwargs = journal.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.3  # the setting, not a fixed 5 s
    row = Counter.objects.create(name="hung")
    server.pause()
    try:
        for value in (1, 2, 3):
            row.hits = value
            assert write_behind.save(row) is None  # saved directly
            assert journal.server.breaker.is_open
        assert hits(row.pk) == 3
        row.hits = 4
        row.save()  # a plain save of a write-behind model does not wait on the journal either
    finally:
        server.resume()
    assert journal.server.breaker.trips == 1  # one timeout opened it; the rest never tried


# -- smaller --


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_flush_command__refuses_a_timeout_that_is_not_a_positive_number(journal_prefix, value):
    with pytest.raises(CommandError) as error:
        call_command("flush_write_behind", "--timeout", value)
    assert error.value.returncode == 2


def test_autodiscovered_tasks_module__registers_the_drain_task():
    from django_tiercache import tasks

    assert tasks.drain_write_behind.name == "django_tiercache.drain_write_behind"
    assert (
        tasks.beat_schedule()["tiercache-write-behind-drain"]["task"]
        == tasks.drain_write_behind.name
    )
