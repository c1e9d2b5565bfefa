"""What a failing partition costs: the circuit breaker and the error policy.

The policy is the one place that decides what a Redis error becomes: by default
a read becomes a miss and a write is skipped; with OPTIONS["RAISE_ERRORS"] it is
raised. Either way it is counted every time and logged once per burst, as
"TypeName: message" with any password masked.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter

logger = logging.getLogger("django_tiercache")

LOG_BURST_SECONDS = 10.0


class CircuitBreaker:
    """Stops calling a partition that fails, for a cool-down period.

    One per partition URL and process, shared by every thread, so that a dead
    server costs each request nothing once the breaker is open.

    - Closed: calls go through. A refused connection costs next to nothing, so
      up to ``threshold`` of them in a row are tolerated (a restart, a blip). A
      timeout is different: it has already cost its caller a whole socket
      timeout and the next call would most likely cost as much, so one timeout
      opens the breaker at once.
    - Open: calls fail at once, without touching the network, until the
      cool-down is over.
    - Half-open: then exactly one call (the probe) goes through while the others
      keep failing fast; its success closes the breaker, its failure opens it
      for another cool-down. A probe whose caller never reports back is given up
      after one cool-down, and the next call probes instead.
    """

    def __init__(self, failures: int, cooldown: float):
        self.threshold, self.cooldown = failures, cooldown
        self.failures = 0
        self.open_until = 0.0
        self.probe_until = 0.0  # while a probe is out: when to stop waiting for it
        self.trips = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """May a call go to the server now? Past the cool-down, yes for one caller only."""
        if self.failures < self.threshold:
            return True  # closed: no lock on the common path
        with self._lock:
            now = time.monotonic()
            if self.failures < self.threshold:
                return True
            if now < self.open_until or now < self.probe_until:
                return False
            self.probe_until = now + self.cooldown
            return True

    def allows(self) -> bool:
        """Would a call go through now? Unlike acquire(), this takes no probe."""
        now = time.monotonic()
        return self.failures < self.threshold or (
            now >= self.open_until and now >= self.probe_until
        )

    def succeeded(self) -> None:
        if self.failures:
            with self._lock:
                self.failures = 0
                self.probe_until = 0.0

    def failed(self, timed_out: bool = False) -> None:
        """Record an unreachable server; `timed_out` opens the breaker at once."""
        with self._lock:
            was_open = self.failures >= self.threshold
            self.failures = max(self.failures + 1, self.threshold if timed_out else 0)
            if self.failures >= self.threshold:
                if not was_open:
                    self.trips += 1
                self.open_until = time.monotonic() + self.cooldown
                self.probe_until = 0.0

    @property
    def is_open(self) -> bool:
        return not self.allows()

    @property
    def state(self) -> str:
        """closed; open (calls fail fast); or half-open: past the cool-down, the
        next call probes a server that has not answered since it failed."""
        if self.failures < self.threshold:
            return "closed"
        return "open" if self.is_open else "half-open"


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
            "cache %s on partition %s failed: %s",
            operation,
            partition,
            error,
        )
        if self.raise_errors and error is not None:
            raise error

    def note(
        self,
        event: str,
        partition: str,
        message: str,
        *args: object,
        level: int = logging.WARNING,
        count: int = 1,
    ) -> None:
        """Count an event (`count` times) and log it, unless the same event was
        logged moments ago."""
        with self._lock:
            self.counts[(event, partition)] += count
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
        logger.log(level, message, *map(_loggable, args))


class Described:
    """An error as a log line shows it, with %s or %r alike: "TypeName: its text".

    redis-py 8 errors' repr() is only "network:ConnectionError"; the text says
    what actually went wrong (which host, which command, refused or timed out).
    """

    __slots__ = ("text",)

    def __init__(self, error: BaseException):
        detail = redact_credentials(str(error))
        self.text = f"{type(error).__name__}: {detail}" if detail else type(error).__name__

    def __str__(self) -> str:
        return self.text

    __repr__ = __str__


# user:password@ in a URL, and password=... in a URL's query or a DSN.
_CREDENTIALS = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:@/\s]*:)[^@\s]*@|(\bpassword=)[^&\s]*")


def redact_credentials(text: str) -> str:
    """The text with every password in it masked."""
    return _CREDENTIALS.sub(lambda m: f"{m[1]}***@" if m[1] else f"{m[2]}***", text)


def _loggable(arg: object) -> object:
    if isinstance(arg, BaseException):
        return Described(arg)
    return redact_credentials(arg) if isinstance(arg, str) else arg
