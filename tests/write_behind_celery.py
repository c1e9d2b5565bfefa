"""The Celery app of the subprocess worker the write-behind kill test starts.

``celery -A tests.write_behind_celery worker``: Django set up with
tests.write_behind_worker_settings (the test's database and journal), the
broker and queue from WB_BROKER_URL and WB_QUEUE.
"""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.write_behind_worker_settings")
django.setup()

app = Celery("tiercache-write-behind-tests", broker=os.environ["WB_BROKER_URL"])
app.conf.task_default_queue = os.environ["WB_QUEUE"]
app.conf.broker_heartbeat = 0
app.conf.worker_prefetch_multiplier = 1

import django_tiercache.write_behind.tasks  # noqa: E402, F401 - registers the drain task
