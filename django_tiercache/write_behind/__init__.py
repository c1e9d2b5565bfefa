"""Write-behind: saves land in a Redis journal at once and reach the database in batches.

See api.py for the calls, journal.py and scripts.py for the journal, drain.py
for the batches, mixed.py for direct writes to rows with pending state, and
tasks.py for the Celery task. ``register(Model, write_behind=True)`` first.
"""

from .api import delete, flush, save, stats
from .exceptions import InvalidWrite, NotWriteBehind, WriteBehindUnavailable

__all__ = [
    "InvalidWrite",
    "NotWriteBehind",
    "WriteBehindUnavailable",
    "delete",
    "flush",
    "save",
    "stats",
]
