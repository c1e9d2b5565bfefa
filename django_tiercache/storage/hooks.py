"""Hooks: what the layers above tell the storage core, registered explicitly.

The core asks these before it acts; the features register into them when they
load (the model layer does, from ``orm/invalidation.py``, which the app imports
in ``AppConfig.ready``). Each hook has one function that registers and one the
core reads through; nothing else touches the state below.

- Fill guards: ``add_fill_guard(guard)``. A guard is a callable ``tags -> bool``
  asked before a tagged write; True means "do not store" (the model layer
  refuses data its own connection has not committed yet).
- Kept on clear: ``keep_on_clear(patterns)``. ``cache.clear()`` empties the
  database but keeps the keys matching these Redis glob patterns (a callable
  returning them, asked at each clear): a feature's durable state, such as the
  write-behind journal, is not cache content.
- Lock horizons: ``declare_lock_horizon(ns, seconds)``. Write locks in the
  namespace ``ns`` last at most that long; a partition that lost its memory of
  locks (or missed some) then refuses fills under tags for that long. Declared
  in every process before the cache is built: readers fill, so they must know it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

FillGuard = Callable[[Iterable[str]], bool]

_fill_guards: list[FillGuard] = []
_lock_horizons: dict[str, int] = {}
_kept_on_clear: list[Callable[[], Iterable[str]]] = []
_lock = threading.Lock()


def add_fill_guard(guard: FillGuard) -> None:
    """Ask `guard(tags)` before every tagged write; idempotent."""
    with _lock:
        if guard not in _fill_guards:
            _fill_guards.append(guard)


def remove_fill_guard(guard: FillGuard) -> None:
    with _lock:
        if guard in _fill_guards:
            _fill_guards.remove(guard)


def fill_guarded() -> bool:
    """Whether any guard is registered (the write path skips the asking otherwise)."""
    return bool(_fill_guards)


def refuses_fill(tags: Iterable[str]) -> bool:
    """Whether a registered guard refuses a write tagged with `tags`."""
    return any(guard(tags) for guard in _fill_guards)


def declare_lock_horizon(ns: str, seconds: float) -> None:
    """Write locks in namespace `ns` last at most `seconds` (the longest declared wins)."""
    with _lock:
        _lock_horizons[ns] = max(_lock_horizons.get(ns, 0), int(seconds * 1000))


def lock_horizon_ms(ns: str) -> int:
    """The lock horizon of namespace `ns`, in milliseconds (0: no locks are taken there)."""
    return _lock_horizons.get(ns, 0)


def keep_on_clear(patterns: Callable[[], Iterable[str]]) -> None:
    """Have cache.clear() keep the keys that match `patterns()` (Redis globs); idempotent."""
    with _lock:
        if patterns not in _kept_on_clear:
            _kept_on_clear.append(patterns)


def kept_on_clear() -> list[str]:
    """The glob patterns cache.clear() keeps, as the registered callables give them now."""
    return [pattern for patterns in list(_kept_on_clear) for pattern in patterns()]
