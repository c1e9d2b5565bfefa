"""Readers on an old snapshot never fill the cache for everyone else.

In a REPEATABLE READ or SERIALIZABLE transaction every read sees the database
as it was when the transaction took its snapshot. A get_object miss there
loads that old state; cached, it would outlive the invalidation of a write that
committed meanwhile, and be served to every other process (a stale entry the
writer already invalidated, so nothing would ever remove it). So while this
thread is inside such a transaction, the cache is read as usual but never
filled (a fill guard, storage/hooks.py).

A transaction counts as one when its connection was configured so
(``DATABASES[...]["OPTIONS"]["isolation_level"]``) or when it ran
``SET TRANSACTION ISOLATION LEVEL ...`` / ``BEGIN ISOLATION LEVEL ...`` itself
(seen by raw_sql.py's execute wrapper).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from django.db import connections

from ..storage import hooks

_SET = re.compile(
    r"^\s*(?:set\s+(?:session\s+characteristics\s+as\s+)?transaction|begin|start\s+transaction)"
    r"\b.*\bisolation\s+level\s+(repeatable\s+read|serializable)",
    re.IGNORECASE | re.DOTALL,
)
_local = threading.local()


def note(connection: Any, sql: str) -> None:
    """Remember that this transaction asked for a snapshot isolation level."""
    if _SET.match(sql) is None:
        return
    marks = getattr(_local, "marks", None)
    if marks is None:
        marks = _local.marks = {}
    blocks = connection.atomic_blocks
    marks[connection.alias] = blocks[0] if blocks else "session"


def _configured(connection: Any) -> bool:
    level = getattr(connection, "isolation_level", None)
    if level is None:
        return False
    if isinstance(level, int) and not hasattr(level, "name"):
        return level in (2, 3)  # psycopg2: REPEATABLE_READ, SERIALIZABLE
    return str(getattr(level, "name", level)).upper() in ("REPEATABLE_READ", "SERIALIZABLE")


def on_old_snapshot() -> bool:
    """Is this thread inside a transaction that reads a snapshot older than now?"""
    marks = getattr(_local, "marks", {})
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            continue
        mark = marks.get(connection.alias)
        blocks = connection.atomic_blocks
        if mark == "session" or (blocks and mark is blocks[0]) or _configured(connection):
            return True
    return False


def refuses_fill(tags: Iterable[str]) -> bool:
    return on_old_snapshot()


hooks.add_fill_guard(refuses_fill)
