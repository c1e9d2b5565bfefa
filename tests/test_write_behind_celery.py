"""Write-behind with real Celery workers: Redis and RabbitMQ brokers, a failing row and its
dead letter, the database down, and SIGKILL mid-batch.

The kill test runs a subprocess worker on RabbitMQ against PostgreSQL (another
process cannot share an in-memory SQLite database).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from django.db import connection

from django_tiercache import get_object, write_behind
from django_tiercache.write_behind.journal import get_journal
from tests.redis_servers import free_port
from tests.testapp.models import Counter
from tests.write_behind_support import clashing_batch, configure, hits

celery = pytest.importorskip("celery")
pytestmark = pytest.mark.django_db(transaction=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_URL = os.environ.get("TIERCACHE_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_BROKER_URL = "redis://127.0.0.1:6379/15"
TASK = "django_tiercache.drain_write_behind"


def answering(url):
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError:
        return False
    return True


def wait_until_drained(send, deadline_seconds=60):
    """Send drain triggers until nothing is pending (a wait, not a timing assert)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        figures = write_behind.stats()
        if figures["pending"] == 0:
            return figures
        send()
        time.sleep(0.2)
    raise AssertionError(f"still pending after {deadline_seconds} s: {write_behind.stats()}")


@pytest.fixture(params=["redis", "rabbitmq"])
def thread_worker(request, journal_prefix):
    from celery.contrib.testing.worker import start_worker

    url = REDIS_BROKER_URL if request.param == "redis" else RABBITMQ_URL
    if not answering(url):
        pytest.skip(f"{request.param} broker not answering at {url}")
    app = celery.Celery("tiercache-wb-tests", broker=url, backend=None, set_as_current=True)
    app.conf.task_default_queue = f"tiercache-wb-{uuid.uuid4().hex[:8]}"
    app.conf.broker_heartbeat = 0
    # With Redis as the broker an unacked message comes back after
    # visibility_timeout; the journal's claims make that safe but slow, so keep
    # it short here (see the README for production values).
    app.conf.broker_transport_options = {"visibility_timeout": 60}
    app.conf.task_acks_late = True
    app.conf.task_reject_on_worker_lost = True
    import django_tiercache.write_behind.tasks  # noqa: F401 - registers the task

    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        yield app
    with app.connection_for_write() as conn:  # the test's queue goes with it
        conn.default_channel.queue_delete(app.conf.task_default_queue)
    if request.param == "redis":
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"*{app.conf.task_default_queue}*"):
            client.delete(key)


def test_worker__drains_on_a_trigger_sent_when_batch_size_rows_are_pending(thread_worker, settings):
    configure(settings, TRIGGER=True, BATCH_SIZE=5)
    rows = [Counter.objects.create(name=f"t{n}") for n in range(5)]
    for row in rows:
        row.hits = 3
        write_behind.save(row)  # the fifth sends the trigger
    deadline = time.monotonic() + 30
    while write_behind.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert write_behind.stats()["pending"] == 0
    assert list(Counter.objects.values_list("hits", flat=True)) == [3] * 5


def test_worker__drain_task_writes_the_latest_state(thread_worker):
    row = Counter.objects.create(name="latest")
    for value in range(1, 6):
        row.hits = value
        write_behind.save(row)
    wait_until_drained(lambda: thread_worker.send_task(TASK))
    assert Counter.objects.get(pk=row.pk).hits == 5


def wait_for(condition, deadline_seconds=60):
    """Poll stats() until `condition(figures)` holds (a wait, not a timing assert)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        figures = write_behind.stats()
        if condition(figures):
            return figures
        time.sleep(0.05)
    raise AssertionError(f"not reached after {deadline_seconds} s: {write_behind.stats()}")


def test_worker__failing_row_is_retried_then_dead_lettered_while_the_rest_lands(thread_worker):
    """As test_write_behind_failures' flush() version, one drain task per attempt."""
    a, b, c = clashing_batch()
    thread_worker.send_task(TASK)
    figures = wait_for(lambda f: f["failed"] == 1)
    assert (hits(a.pk), hits(b.pk), hits(c.pk)) == (1, 0, 3)
    assert (figures["written"], figures["retrying"], figures["pending"]) == (2, 1, 1)
    thread_worker.send_task(TASK)  # MAX_RETRIES is 2 here: a second failure, still retrying
    figures = wait_for(lambda f: f["failed"] == 2)
    assert (figures["dead_letters"], figures["retrying"]) == (0, 1)
    thread_worker.send_task(TASK)  # the third attempt fails: a dead letter
    figures = wait_for(lambda f: f["failed"] == 3)
    assert (figures["dead_letters"], figures["pending"], figures["retrying"]) == (1, 0, 0)
    (letter,) = get_journal().dead_letters().values()
    assert "IntegrityError" in letter["error"] and letter["attempts"] == 3
    assert (hits(a.pk), hits(b.pk), hits(c.pk)) == (1, 0, 3)


def test_worker__failing_row_waits_its_backoff(thread_worker, settings):
    configure(settings, RETRY_BACKOFF=3600)
    _, b, _ = clashing_batch()
    thread_worker.send_task(TASK)
    figures = wait_for(lambda f: f["failed"] == 1)
    assert (figures["written"], figures["retrying"]) == (2, 1)
    journal = get_journal()
    due_ms = journal.client.zscore(journal.keys["pending"], f"testapp.counter:{b.pk}")
    seconds, micros = journal.client.time()
    assert due_ms - (seconds * 1000 + micros // 1000) > 3000 * 1000  # an hour away, give or take


def db_unavailable_drains():
    journal = get_journal()
    return int(journal.client.hget(journal.keys["counters"], "db_unavailable") or 0)


def test_worker__database_down_writes_wait_and_land_when_it_returns(thread_worker):
    """The worker thread opens its own connections from the same settings: pointed
    at a closed port, each drain fails to reach the database, and the rows wait."""
    if connection.vendor == "sqlite":
        pytest.skip("an in-memory SQLite database cannot go down")
    row = Counter.objects.create(name="down")
    row.hits = 7
    write_behind.save(row)
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        for attempt in (1, 2):
            thread_worker.send_task(TASK)
            deadline = time.monotonic() + 60
            while db_unavailable_drains() < attempt and time.monotonic() < deadline:
                time.sleep(0.05)
            assert db_unavailable_drains() == attempt
        figures = write_behind.stats()
        assert (figures["pending"], figures["in_flight"], figures["retrying"]) == (1, 0, 0)
        assert (figures["written"], figures["failed"]) == (0, 0)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    wait_until_drained(lambda: thread_worker.send_task(TASK))
    assert hits(row.pk) == 7


def wait_for_claims(polls_after):
    """Return while the worker holds claimed rows (a batch under way), a few polls in."""
    journal = get_journal()
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline:
        if journal.client.zcard(journal.keys["inflight"]):
            seen += 1
            if seen >= polls_after:
                return
    raise AssertionError("the worker never claimed a batch")


def start_subprocess_worker(queue, prefix, **settings):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.write_behind_worker_settings",
        "WB_BROKER_URL": RABBITMQ_URL,
        "WB_QUEUE": queue,
        "WB_KEY_PREFIX": prefix,
        "WB_DB_NAME": connection.settings_dict["NAME"],
        "WB_BATCH_SIZE": "10",
        "WB_CLAIM_TIMEOUT": "1",
        **{f"WB_{name}": str(value) for name, value in settings.items()},
    }
    command = [sys.executable, "-m", "celery", "-A", "tests.write_behind_celery", "worker"]
    command += ["--pool", "solo", "--without-heartbeat", "--without-mingle", "--without-gossip"]
    command += ["--loglevel", "WARNING"]
    return subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_sigkill_mid_batch__no_write_lost_and_no_older_state_lands_last(journal_prefix, settings):
    if connection.vendor == "sqlite":
        pytest.skip("a subprocess worker cannot share an in-memory SQLite database")
    if not answering(RABBITMQ_URL):
        pytest.skip("RabbitMQ not answering")
    configure(settings, BATCH_SIZE=10, CLAIM_TIMEOUT=1)
    queue = f"tiercache-wb-kill-{uuid.uuid4().hex[:8]}"
    app = celery.Celery("tiercache-wb-sender", broker=RABBITMQ_URL)
    send = lambda: app.send_task(TASK, queue=queue)  # noqa: E731
    rows = [Counter.objects.create(name=f"k{n}") for n in range(400)]
    chance = random.Random(13)
    worker = start_subprocess_worker(queue, journal_prefix)
    kills = 0
    try:
        for value in range(1, 5):
            for row in rows:
                row.hits = value
                write_behind.save(row)
            send()
            wait_for_claims(chance.randint(1, 4))
            worker.send_signal(signal.SIGKILL)  # rows claimed: mid-batch
            worker.wait(timeout=10)
            kills += 1
            worker = start_subprocess_worker(queue, journal_prefix)
        figures = wait_until_drained(send)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
    assert kills == 4
    assert (figures["pending"], figures["dead_letters"]) == (0, 0)
    assert figures["written"] >= len(rows)  # some rows more than once: the same state again
    assert sorted(set(Counter.objects.values_list("hits", flat=True))) == [4]
    assert get_object(Counter, rows[0].pk).hits == 4


def test_subprocess_worker__failing_row_is_retried_then_dead_lettered_while_the_rest_lands(
    journal_prefix,
):
    """The thread-worker case again, drained by a worker process (on PostgreSQL)."""
    if connection.vendor == "sqlite":
        pytest.skip("a subprocess worker cannot share an in-memory SQLite database")
    if not answering(RABBITMQ_URL):
        pytest.skip("RabbitMQ not answering")
    queue = f"tiercache-wb-fail-{uuid.uuid4().hex[:8]}"
    app = celery.Celery("tiercache-wb-sender", broker=RABBITMQ_URL)
    a, b, c = clashing_batch()
    worker = start_subprocess_worker(queue, journal_prefix, MAX_RETRIES=2, RETRY_BACKOFF=0)
    try:
        app.send_task(TASK, queue=queue)
        figures = wait_for(lambda f: f["failed"] == 1)
        assert (hits(a.pk), hits(b.pk), hits(c.pk)) == (1, 0, 3)
        assert (figures["written"], figures["retrying"], figures["dead_letters"]) == (2, 1, 0)
        for attempts in (2, 3):
            app.send_task(TASK, queue=queue)
            figures = wait_for(lambda f, n=attempts: f["failed"] == n)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
    assert (figures["dead_letters"], figures["pending"], figures["retrying"]) == (1, 0, 0)
    (letter,) = get_journal().dead_letters().values()
    assert "IntegrityError" in letter["error"] and letter["attempts"] == 3
