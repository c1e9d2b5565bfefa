"""A journal only this site can write, and bad rows that never hold back good ones.

Rows are planted straight into the journal's Redis, as anyone who can reach it
could; real Redis, real database (the deferred-constraint cases on PostgreSQL).
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings

from django_tiercache import get_object, write_behind
from django_tiercache.write_behind import settings as wb_settings
from django_tiercache.write_behind.journal import get_journal
from tests.test_admin_stats import JSON, PAGE
from tests.testapp.models import Counter, Tally, Unregistered
from tests.write_behind_support import configure, hits

pytestmark = pytest.mark.django_db(transaction=True)

FORGED_MAC = "A" * 22


def plant(row, fields=None, state=None, op="save"):
    """Write a pending row into the journal with plain Redis commands."""
    journal = get_journal()
    client = journal.client
    raw_row = row if isinstance(row, bytes) else row.encode()
    client.hset(journal.keys["state"], raw_row, state or f"999999|{op}|{FORGED_MAC}")
    if fields:
        client.hset(journal.fields_key(raw_row.decode("utf-8", "surrogateescape")), mapping=fields)
    client.zadd(journal.keys["pending"], {raw_row: 0})
    client.zadd(journal.keys["since"], {raw_row: 0})


def dead(row):
    return get_journal().dead_letters()[row]


def test_planted_superuser__is_quarantined_and_never_written(journal_prefix):
    fields = {
        "username": '"intruder"',
        "password": '"md5$x$0123"',
        "is_superuser": "true",
        "is_staff": "true",
        "is_active": "true",
    }
    plant("auth.user:4242", fields)
    write_behind.flush()
    assert not User.objects.filter(username="intruder").exists()
    letter = dead("auth.user:4242")
    assert letter["quarantined"] and "not registered with write_behind" in letter["error"]
    assert write_behind.stats()["pending"] == 0


def test_planted_row_of_an_unregistered_model__is_never_written(journal_prefix):
    plant("testapp.unregistered:1", {"name": '"planted"'})
    write_behind.flush()
    assert not Unregistered.objects.exists()
    assert dead("testapp.unregistered:1")["quarantined"]


def test_planted_row_of_a_write_behind_model_without_this_sites_mac__is_never_written(
    journal_prefix,
):
    row = Counter.objects.create(name="mac", hits=1)
    plant(f"testapp.counter:{row.pk}", {"hits": f"{FORGED_MAC}=99"})
    write_behind.flush()
    assert hits(row.pk) == 1
    assert "not signed by this site" in dead(f"testapp.counter:{row.pk}")["error"]


def test_a_signed_value_moved_to_another_row_or_edited__is_never_written(journal_prefix):
    a, b = Counter.objects.create(name="a"), Counter.objects.create(name="b")
    a.hits = 5
    write_behind.save(a, update_fields=["hits"])
    journal = get_journal()
    stored = journal.client.hget(journal.fields_key(f"testapp.counter:{a.pk}"), "hits").decode()
    plant(f"testapp.counter:{b.pk}", {"hits": stored}, op="update")  # a's signature on b
    edited = stored[:-1] + "7"
    journal.client.hset(journal.fields_key(f"testapp.counter:{a.pk}"), "hits", edited)
    write_behind.flush()
    assert (hits(a.pk), hits(b.pk)) == (0, 0)
    assert set(journal.dead_letters()) == {f"testapp.counter:{a.pk}", f"testapp.counter:{b.pk}"}


def test_a_pending_delete_with_a_forged_op__is_never_applied(journal_prefix):
    row = Counter.objects.create(name="keep")
    plant(f"testapp.counter:{row.pk}", op="delete")
    write_behind.flush()
    assert Counter.objects.filter(pk=row.pk).exists()


def test_unsigned_pending_state__is_not_shown_by_get_object(journal_prefix):
    row = Counter.objects.create(name="seen", hits=3)
    plant(f"testapp.counter:{row.pk}", {"hits": f"{FORGED_MAC}=1000"}, op="update")
    assert get_object(Counter, row.pk).hits == 3


def test_rows_queued_before_a_key_rotation__land_under_secret_key_fallbacks(
    journal_prefix, settings
):
    row = Counter.objects.create(name="rotated")
    row.hits = 8
    write_behind.save(row)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-key-for-the-tests-only-" + "x" * 30
    assert write_behind.flush() == 1
    assert hits(row.pk) == 8


def test_rows_queued_under_a_key_no_longer_known__are_quarantined(journal_prefix, settings):
    row = Counter.objects.create(name="foreign")
    row.hits = 8
    write_behind.save(row)
    settings.SECRET_KEY = "another-site-entirely-" + "y" * 40
    assert write_behind.flush() == 0
    assert hits(row.pk) == 0 and dead(f"testapp.counter:{row.pk}")["quarantined"]


def test_default_journal_prefix__follows_the_caches_key_prefix(settings):
    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_BEHIND": {}}
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"]}}
    settings.CACHES["default"]["KEY_PREFIX"] = "site-a"
    assert wb_settings.configured()["KEY_PREFIX"] == "site-a:tiercache:wb"
    settings.CACHES["default"]["KEY_PREFIX"] = ""
    assert wb_settings.configured()["KEY_PREFIX"] == "tiercache:wb"


def _good_rows(count=50):
    rows = [Counter(name=f"good{i}") for i in range(count)]
    Counter.objects.bulk_create(rows)
    rows = list(Counter.objects.filter(name__startswith="good"))
    for row in rows:
        row.hits = 1
        write_behind.save(row, update_fields=["hits"])
    return rows


BAD_ROWS = {
    "unknown model": ("gone.model:1", {"x": f"{FORGED_MAC}=1"}, None),
    "pk that does not convert": ('testapp.counter:"abc"', {"hits": f"{FORGED_MAC}=1"}, None),
    "bytes not UTF-8": (b"testapp.counter:\xff\xfe", {"hits": f"{FORGED_MAC}=1"}, None),
    "field not on the model": ("testapp.counter:424242", {"nope": f"{FORGED_MAC}=1"}, None),
    "malformed state": ("testapp.counter:424243", None, "garbage"),
    "state not UTF-8": ("testapp.counter:424244", None, b"1|save|\xff"),
}


@pytest.mark.parametrize("kind", BAD_ROWS)
def test_one_bad_row__never_holds_back_the_50_good_rows_behind_it(journal_prefix, kind):
    row, fields, state = BAD_ROWS[kind]
    plant(row, fields, state)
    rows = _good_rows()
    assert write_behind.flush() == 50
    assert sum(hits(r.pk) for r in rows) == 50
    figures = write_behind.stats()
    assert (figures["pending"], figures["dead_letters"]) == (0, 1)
    (letter,) = get_journal().dead_letters().values()
    assert letter["quarantined"]


def test_retrying_a_quarantined_letter__leaves_it_quarantined(journal_prefix):
    plant("testapp.unregistered:1", {"name": '"planted"'})
    write_behind.flush()
    assert get_journal().retry_dead() == 0
    assert write_behind.flush() == 0 and not Unregistered.objects.exists()


def test_an_unreadable_dead_letter__shows_on_the_page_and_json(journal_prefix, client, admin_user):
    journal = get_journal()
    journal.client.hset(journal.keys["dead"], b"testapp.counter:\xff", b"\xff\xfenot json")
    letters = journal.dead_letters()
    (letter,) = letters.values()
    assert letter["quarantined"] and "unreadable" in letter["error"]
    client.force_login(admin_user)
    page = client.get(PAGE)
    assert page.status_code == 200 and b"unreadable dead letter" in page.content
    data = client.get(JSON)
    assert data.status_code == 200
    assert json.loads(data.content)  # valid JSON, whatever the letter's bytes


@pytest.mark.skipif(connection.vendor != "postgresql", reason="deferred constraints: PostgreSQL")
def test_deferred_and_check_constraints__fail_their_own_row_and_the_good_ones_land(
    journal_prefix,
):
    parent = Counter.objects.create(name="parent")
    taken = Tally.objects.create(code="taken")
    good = [Tally.objects.create(code=f"g{i}") for i in range(3)]
    bad_fk = Tally.objects.create(code="fk")
    bad_unique = Tally.objects.create(code="u")
    bad_check = Tally.objects.create(code="c")
    for row in good:
        row.counter_id, row.amount = parent.pk, 5
    bad_fk.counter_id = 987654  # deferred: fails at COMMIT, unless checked at once
    bad_unique.code = taken.code  # deferred unique
    bad_check.amount = -1  # CHECK (never deferred)
    for row in [*good, bad_fk, bad_unique, bad_check]:
        write_behind.save(row)
    assert write_behind.flush() == 3
    assert list(Tally.objects.filter(amount=5).values_list("code", flat=True).order_by("code")) == [
        "g0",
        "g1",
        "g2",
    ]
    for _ in range(3):  # MAX_RETRIES is 2 here: the third failure makes the dead letters
        write_behind.flush()
    letters = get_journal().dead_letters()
    assert {row.split(":")[1] for row in letters} == {
        str(bad_fk.pk),
        str(bad_unique.pk),
        str(bad_check.pk),
    }
    assert "foreign key" in letters[f"testapp.tally:{bad_fk.pk}"]["error"]


def test_max_retries__counts_retries_after_the_first_attempt(journal_prefix, settings):
    configure(settings, MAX_RETRIES=1)
    parent = Counter.objects.create(name="p")
    clash = Counter.objects.create(name="q")
    clash.name = parent.name
    write_behind.save(clash)
    write_behind.flush()  # attempt 1
    assert write_behind.stats()["dead_letters"] == 0
    write_behind.flush()  # attempt 2 = the one retry
    assert dead(f"testapp.counter:{clash.pk}")["attempts"] == 2


@override_settings()
def test_journal_rows_are_not_applied_for_a_model_registered_later_without_write_behind(
    journal_prefix,
):
    # A model registered plainly (tests.testapp's Product) is not a write-behind target.
    plant("testapp.product:1", {"name": f"{FORGED_MAC}=" + '"x"'})
    write_behind.flush()
    assert "not registered with write_behind" in dead("testapp.product:1")["error"]
