"""The example's Celery app: drains the write-behind journal (the shop's view counters).

    cd example_project && celery -A example worker --beat --loglevel INFO

The broker is CELERY_BROKER_URL (default: RabbitMQ on 127.0.0.1:5672, guest/guest);
messages carry only "drain now", never the writes themselves.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

app = Celery("example")
app.conf.broker_url = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
app.autodiscover_tasks(["django_tiercache.write_behind"])


@app.on_after_finalize.connect
def schedule_drains(sender: Celery, **kwargs: object) -> None:
    # Read after Django is set up: FLUSH_INTERVAL comes from settings.TIERCACHE.
    from django_tiercache.write_behind.tasks import beat_schedule

    sender.conf.beat_schedule = {**sender.conf.beat_schedule, **beat_schedule()}
