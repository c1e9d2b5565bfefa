"""What a failing partition costs: the circuit breaker and the error policy.

The policy is the one place that decides what a Redis error becomes: by default
a read becomes a miss and a write is skipped; with OPTIONS["RAISE_ERRORS"] it is
raised. Either way it is counted every time and logged once per burst.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

logger = logging.getLogger("django_tiercache")

LOG_BURST_SECONDS = 10.0


class CircuitBreaker:
    """Stops calling a partition after repeated failures, for a cool-down period.

    One per partition URL and process, shared by every thread, so that a dead
    server costs each request nothing once the breaker is open. After the
    cool-down one call is let through; it closes the breaker or reopens it.
    """

    def __init__(self, failures: int, cooldown: float):
        self.threshold, self.cooldown = failures, cooldown
        self.failures = 0
        self.open_until = 0.0
        self.trips = 0

    def allows(self) -> bool:
        return self.failures < self.threshold or time.monotonic() >= self.open_until

    def succeeded(self) -> None:
        self.failures = 0

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if self.failures == self.threshold:
                self.trips += 1
            self.open_until = time.monotonic() + self.cooldown

    @property
    def is_open(self) -> bool:
        return not self.allows()


class ErrorPolicy:
    """Counts, logs (once per burst) and, if configured, raises partition errors."""

    def __init__(self, raise_errors: bool):
        self.raise_errors = raise_errors
        self.counts: Counter[tuple[str, str]] = Counter()
        self._last_logged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def failed(self, operation: str, partition: str, error: BaseException | None) -> None:
        """Record a failed call; raises it again when errors must raise."""
        self.note(
            f"error:{operation}",
            partition,
            "cache %s on partition %s failed: %r",
            operation,
            partition,
            error,
        )
        if self.raise_errors and error is not None:
            raise error

    def note(
        self, event: str, partition: str, message: str, *args: object, level: int = logging.WARNING
    ) -> None:
        """Count an event and log it, unless the same event was logged moments ago."""
        with self._lock:
            self.counts[(event, partition)] += 1
            burst = f"{event}@{partition}"
            now = time.monotonic()
            if now - self._last_logged.get(burst, -LOG_BURST_SECONDS) < LOG_BURST_SECONDS:
                self._suppressed[burst] += 1
                return
            self._last_logged[burst] = now
            suppressed = self._suppressed.pop(burst, 0)
        if suppressed:
            message += " (and %d more since the last report)"
            args = (*args, suppressed)
        logger.log(level, message, *args)
