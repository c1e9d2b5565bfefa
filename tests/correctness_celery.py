"""The Celery app of the correctness cases' worker process (tests/test_correctness_celery.py).

``celery -A tests.correctness_celery worker``: Django set up with tests.settings on
the test's database (CORR_DB_NAME), the broker and queue from CORR_BROKER_URL and
CORR_QUEUE, results sent back over the broker (rpc://).
"""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.correctness_worker_settings")
django.setup()

app = Celery("tiercache-correctness", broker=os.environ["CORR_BROKER_URL"], backend="rpc://")
app.conf.task_default_queue = os.environ["CORR_QUEUE"]
app.conf.broker_heartbeat = 0
app.conf.worker_prefetch_multiplier = 1

from tests.correctness_tasks import register  # noqa: E402

register(app)
