"""The on_commit case with a real Celery task: a hook sends it, a worker reads the row
through get_object and must see the committed state.

Two workers, both on RabbitMQ: a thread of this process (celery.contrib.testing, as
tests/test_write_behind_celery.py does) and a worker process of its own (PostgreSQL
only: another process cannot share an in-memory SQLite database). The task's answer
comes back over the broker (rpc://).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection, transaction

from django_tiercache import get_object
from tests.correctness_tasks import READ_VERSION, register
from tests.test_write_behind_celery import RABBITMQ_URL, answering
from tests.testapp.models import Product

celery = pytest.importorskip("celery")
pytestmark = pytest.mark.django_db(transaction=True)

REPO_ROOT = Path(__file__).resolve().parent.parent
WRITES = 40
ANSWER_WITHIN = 60  # seconds: a worker that does not answer fails the test, not the suite


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()


def sender(queue):
    app = celery.Celery("tiercache-correctness-sender", broker=RABBITMQ_URL, backend="rpc://")
    app.conf.task_default_queue = queue
    app.conf.broker_heartbeat = 0
    return app


def drop(app, queue):
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue)


@pytest.fixture(params=["thread", "process"])
def worker(request):
    """A Celery app whose tasks a real worker runs; sends by name to its queue."""
    if not answering(RABBITMQ_URL):
        pytest.skip(f"RabbitMQ not answering at {RABBITMQ_URL}")
    queue = f"tiercache-corr-{uuid.uuid4().hex[:8]}"
    app = sender(queue)
    if request.param == "thread":
        from celery.contrib.testing.worker import start_worker

        register(app)
        with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
            yield app
    else:
        if connection.vendor == "sqlite":
            pytest.skip("a worker process cannot share an in-memory SQLite database")
        process = start_worker_process(queue)
        try:
            yield app
        finally:
            process.kill()
            process.wait(timeout=10)
    drop(app, queue)


def start_worker_process(queue):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.correctness_worker_settings",
        "CORR_BROKER_URL": RABBITMQ_URL,
        "CORR_QUEUE": queue,
        "CORR_DB_NAME": connection.settings_dict["NAME"],
    }
    command = [sys.executable, "-m", "celery", "-A", "tests.correctness_celery", "worker"]
    command += ["--pool", "solo", "--without-heartbeat", "--without-mingle", "--without-gossip"]
    command += ["--loglevel", "WARNING"]
    return subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.mark.parametrize("hook_first", [True, False], ids=["hook-before-save", "hook-after-save"])
def test_a_task_sent_from_on_commit__reads_the_committed_row_through_get_object(worker, hook_first):
    product = Product.objects.create(name="celery", version=0)
    seen = []
    for version in range(1, WRITES + 1):
        get_object(Product, product.pk)  # the old row, cached
        sent = []

        def send(sent=sent):
            sent.append(worker.send_task(READ_VERSION, args=[product.pk]))

        with transaction.atomic():
            if hook_first:
                transaction.on_commit(send)
            product.version = version
            product.save(update_fields=["version"])
            if not hook_first:
                transaction.on_commit(send)
        seen.append(sent[0].get(timeout=ANSWER_WITHIN))
    stale = sum(got != version for version, got in enumerate(seen, start=1))
    assert stale == 0, f"the worker read {seen}"
