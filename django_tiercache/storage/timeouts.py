"""Cache timeouts: which ones Django's API accepts and what a partition is given.

A timeout is a number of seconds (fractions honoured: partitions store with
Redis' PX), None for "forever", zero or less for "expire at once", as in every
Django backend. Anything else is refused with TypeError or ValueError at the
call, before anything is sent, rather than turned into an entry that is
silently never stored (Redis refuses expire times it cannot represent).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT

# About 317 years: longer than any entry needs, and three orders of magnitude
# inside what a partition can store (Redis Functions pass numbers to Redis as
# doubles, exact up to 2**53 milliseconds). Use None for "forever".
MAX_TIMEOUT = 10**10


def seconds(timeout: Any, default: Any) -> int | float | None:
    """The timeout in seconds (None: forever; 0 or less: not stored); raises on bad values."""
    if timeout is DEFAULT_TIMEOUT:
        timeout = default
    if timeout is None:
        return None
    if type(timeout) is int and -MAX_TIMEOUT <= timeout <= MAX_TIMEOUT:
        return timeout  # the usual case, without the checks below
    if not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"A cache timeout must be a number of seconds or None, got {timeout!r} "
            f"({type(timeout).__name__})."
        )
    number = timeout if isinstance(timeout, (int, float)) else float(timeout)
    if math.isnan(number) or not -MAX_TIMEOUT <= number <= MAX_TIMEOUT:
        raise ValueError(
            f"A cache timeout must be between -{MAX_TIMEOUT} and {MAX_TIMEOUT} seconds, "
            f"got {timeout!r}; use None to store forever."
        )
    return number


def ttl_ms(timeout: Any, default: Any) -> int | None:
    """What a partition is given: milliseconds, None for forever, 0 for "do not store"."""
    value = seconds(timeout, default)
    return None if value is None else max(0, int(value * 1000))
