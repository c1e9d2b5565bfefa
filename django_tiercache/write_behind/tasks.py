"""The Celery side (needs the ``celery`` extra): a drain task and its beat entry.

Messages carry triggers only; the writes stay in the journal. Add the schedule
to the project's Celery app::

    from django_tiercache.write_behind.tasks import beat_schedule
    app.conf.beat_schedule = {**app.conf.beat_schedule, **beat_schedule()}

With Redis as the broker, set ``task_acks_late = True`` and
``task_reject_on_worker_lost = True`` only if you want a killed drain re-run
at once: the journal's claims already make any later drain pick the rows up
after CLAIM_TIMEOUT, so neither is needed for safety (see the README).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app, shared_task

from . import settings as wb_settings
from .drain import drain

logger = logging.getLogger("django_tiercache.write_behind")

TASK_NAME = "django_tiercache.drain_write_behind"


@shared_task(name=TASK_NAME, ignore_result=True)
def drain_write_behind(timeout: float | None = None) -> dict[str, Any]:
    """Drain due pending writes; returns {"written", "failed", "unavailable"}.

    A database outage is not a task failure: the rows wait for the next run.
    """
    outcome = drain(timeout=timeout)
    return {
        "written": outcome.written,
        "failed": outcome.failed,
        "unavailable": None if outcome.unavailable is None else str(outcome.unavailable),
    }


def beat_schedule() -> dict[str, dict[str, Any]]:
    """The beat entry: a drain every FLUSH_INTERVAL seconds, expiring after one interval."""
    interval = float(wb_settings.get()["FLUSH_INTERVAL"])
    return {
        "tiercache-write-behind-drain": {
            "task": TASK_NAME,
            "schedule": interval,
            "options": {"expires": interval},
        }
    }


def trigger_drain() -> None:
    """Send a drain trigger if the project configured a broker; never fails the caller."""
    if not current_app.conf.broker_url:
        return
    try:
        drain_write_behind.apply_async(retry=False)
    except Exception as exc:  # noqa: BLE001 - the periodic drain still runs
        logger.warning("write-behind: drain trigger not sent (%s: %s)", type(exc).__name__, exc)
