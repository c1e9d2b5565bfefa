"""What write-behind raises: each is a subclass of a broader error callers may catch."""

from __future__ import annotations

from ..exceptions import NotRegistered


class NotWriteBehind(NotRegistered):
    """The model was not registered with ``register(Model, write_behind=True)``."""


class InvalidWrite(ValueError):
    """The instance cannot be queued (no primary key, a value JSON cannot carry...);
    nothing was queued."""


class WriteBehindUnavailable(RuntimeError):
    """The journal is unreachable or full and TIERCACHE["WRITE_BEHIND"]["ON_UNAVAILABLE"]
    is "raise"; nothing was written."""
