"""manage.py flush_write_behind and write_behind_dead_letters: output and exit statuses."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from django_tiercache import write_behind
from tests.redis_servers import closed_port_url
from tests.test_write_behind_failures import clashing_batch
from tests.testapp.models import Counter
from tests.write_behind_support import configure

pytestmark = pytest.mark.django_db(transaction=True)


def run(name, *args, **options):
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def fails(name, *args, **options):
    with pytest.raises(CommandError) as failure:
        run(name, *args, **options)
    return failure.value


def test_flush__writes_pending_rows_and_exits_0(journal_prefix):
    row = Counter.objects.create(name="cmd")
    row.hits = 4
    write_behind.save(row)
    out, _ = run("flush_write_behind")
    assert "1 row written" in out
    assert Counter.objects.get(pk=row.pk).hits == 4


def test_flush__failed_rows_exit_1_and_bad_requests_2(journal_prefix, settings):
    clashing_batch()
    error = fails("flush_write_behind", verbosity=2)
    assert error.returncode == 1 and "1 row failed" in str(error)
    assert fails("flush_write_behind", timeout=0).returncode == 2
    configure(settings, REDIS_URL=closed_port_url())
    assert fails("flush_write_behind").returncode == 2


def test_dead_letters__list_retry_drop(journal_prefix):
    a, b, _ = clashing_batch()
    for _ in range(3):
        write_behind.flush()
    out, _ = run("write_behind_dead_letters")
    assert f"testapp.counter:{b.pk}" in out and "IntegrityError" in out
    assert fails("write_behind_dead_letters", "testapp.counter:0", drop=True).returncode == 1
    Counter.objects.filter(pk=a.pk).update(name="a2")
    out, _ = run("write_behind_dead_letters", retry=True)
    assert "1 dead letter queued" in out
    write_behind.flush()
    assert Counter.objects.get(pk=b.pk).name == "a"
    out, _ = run("write_behind_dead_letters", drop=True)
    assert "0 dead letters dropped" in out


def test_check__bad_write_behind_settings_are_tiercache_e010(settings):
    from django.core.checks import run_checks

    settings.TIERCACHE = {"WRITE_BEHIND": {"BATCH_SIZE": 0, "ON_UNAVAILABLE": "drop", "SIZE": 1}}
    found = [m for m in run_checks() if m.id == "tiercache.E010"]
    texts = " ".join(m.msg for m in found)
    assert len(found) == 3 and all(m.hint for m in found)
    assert "BATCH_SIZE" in texts and "'drop'" in texts and "'SIZE'" in texts
