"""What this process last read from Redis for the statistics, kept for a few seconds.

A scraper that asks every second, or a dashboard polling the JSON view, then
costs Redis one read per STATS_INTERVAL per process instead of one per request.
The figures change no faster anyway: each process publishes every
STATS_INTERVAL seconds. Actions that change the figures call forget().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.dispatch import receiver

T = TypeVar("T")

_remembered: dict[Hashable, tuple[float, Any]] = {}
_lock = threading.Lock()


def remembered(key: Hashable, seconds: float, read: Callable[[], T]) -> T:
    """read()'s value, or the one kept under ``key`` if it is at most ``seconds`` old."""
    with _lock:
        kept = _remembered.get(key)
    if kept is not None and time.monotonic() - kept[0] < seconds:
        return kept[1]
    value = read()
    remember(key, value)
    return value


def remember(key: Hashable, value: Any) -> None:
    with _lock:
        _remembered[key] = (time.monotonic(), value)


def forget() -> None:
    """Drop everything kept: the next reader reads Redis again."""
    with _lock:
        _remembered.clear()


@receiver(setting_changed)
def _forget_on_new_settings(setting: str, **kwargs: Any) -> None:
    if setting in ("CACHES", "TIERCACHE"):
        forget()
