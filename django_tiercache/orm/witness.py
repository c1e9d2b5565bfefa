"""The durable witness of last resort: missed invalidations kept in the database.

With OPTIONS["WITNESS"] = "database", a cache records every fence (an
invalidation a partition missed) in the table of
``django_tiercache.models.MissedInvalidation`` as well as on the other
partitions, and every lease renewal reads it (one indexed SELECT per
partition per TAG_LEASE/2 per process); a renewal that cannot hear from every
other partition is vouched for by this table, which notes the grant (an
UPDATE). So a lone partition, or the survivor of two, keeps serving its
tagged entries through an outage of the others, and what a partition missed
is never forgotten with the partition that was told.

Queries run on a connection of their own (per thread, in autocommit), never
inside the caller's transaction: a lease granted here must not vanish in a
rollback, nor wait on the caller's locks. Deadlines use the database's clock.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from django.core.signals import request_finished
from django.db import connections

from ..models import MissedInvalidation

TABLE = MissedInvalidation._meta.db_table

# The database's clock in epoch milliseconds, per vendor.
NOW_MS = {
    "postgresql": "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint",
    "sqlite": "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    "mysql": "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
    "oracle": "SELECT (CAST(SYS_EXTRACT_UTC(SYSTIMESTAMP) AS DATE) - DATE '1970-01-01') "
    "* 86400000 FROM dual",
}


# Every witness connection of the process, to close them as Django closes its own.
_opened: weakref.WeakSet[Any] = weakref.WeakSet()


def close_connections(**kwargs: Any) -> None:
    """Close this thread's witness connections (at the end of each request, as
    Django does with its own, and whenever a test wants the database to itself)."""
    for connection in list(_opened):
        if connection._thread_ident == threading.get_ident():  # never another thread's
            connection.close()


request_finished.connect(close_connections, dispatch_uid="django_tiercache.witness")


class DatabaseWitness:
    """Fences and grants for one cache's partitions, in a database table."""

    epoch = "database"  # a database does not forget, as a Redis server may

    def __init__(self, cache_id: str, options: dict[str, Any]):
        self.cache_id = cache_id[:200]
        self.alias = options.get("WITNESS_DATABASE") or "default"
        self._local = threading.local()

    def _cursor(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None or not connection.is_usable():
            if connection is not None:
                connection.close()
            connection = self._local.connection = connections.create_connection(self.alias)
            _opened.add(connection)
        connection.ensure_connection()
        return connection.cursor()

    def _now_ms(self, cursor: Any) -> int:
        cursor.execute(NOW_MS[cursor.db.vendor])
        return int(cursor.fetchone()[0])

    def _ensure_row(self, cursor: Any, partition_id: str) -> None:
        cursor.execute(
            f"SELECT 1 FROM {TABLE} WHERE cache = %s AND partition = %s",  # noqa: S608
            [self.cache_id, partition_id],
        )
        if cursor.fetchone() is None:
            try:
                cursor.execute(
                    f"INSERT INTO {TABLE} (cache, partition, misses, granted_until_ms) "  # noqa: S608
                    "VALUES (%s, %s, 0, 0)",
                    [self.cache_id, partition_id],
                )
            except Exception:  # noqa: BLE001 - inserted meanwhile by another process
                if not self._row_exists(cursor, partition_id):
                    raise

    def _row_exists(self, cursor: Any, partition_id: str) -> bool:
        cursor.execute(
            f"SELECT 1 FROM {TABLE} WHERE cache = %s AND partition = %s",  # noqa: S608
            [self.cache_id, partition_id],
        )
        return cursor.fetchone() is not None

    def record_fence(self, ids: list[str], lease_ms: int) -> list[int]:
        """Count a miss for each partition; ms the latest lease vouched here may still run."""
        with self._cursor() as cursor:
            left = []
            for partition_id in ids:
                self._ensure_row(cursor, partition_id)
                cursor.execute(
                    f"UPDATE {TABLE} SET misses = misses + 1 "  # noqa: S608
                    "WHERE cache = %s AND partition = %s",
                    [self.cache_id, partition_id],
                )
                cursor.execute(
                    f"SELECT granted_until_ms FROM {TABLE} "  # noqa: S608
                    "WHERE cache = %s AND partition = %s",
                    [self.cache_id, partition_id],
                )
                granted = int(cursor.fetchone()[0])
                left.append(max(0, granted - self._now_ms(cursor)))
            return left

    def check_fence(self, partition_id: str, lease_ms: int) -> tuple[int, str]:
        """Note a lease of lease_ms from now; (misses recorded for the partition, epoch)."""
        with self._cursor() as cursor:
            self._ensure_row(cursor, partition_id)
            deadline = self._now_ms(cursor) + lease_ms
            cursor.execute(
                f"UPDATE {TABLE} SET granted_until_ms = %s "  # noqa: S608
                "WHERE cache = %s AND partition = %s AND granted_until_ms < %s",
                [deadline, self.cache_id, partition_id, deadline],
            )
            cursor.execute(
                f"SELECT misses FROM {TABLE} WHERE cache = %s AND partition = %s",  # noqa: S608
                [self.cache_id, partition_id],
            )
            return int(cursor.fetchone()[0]), self.epoch

    def misses(self, partition_id: str) -> int:
        """The misses recorded for the partition (a read: nothing noted)."""
        with self._cursor() as cursor:
            cursor.execute(
                f"SELECT misses FROM {TABLE} WHERE cache = %s AND partition = %s",  # noqa: S608
                [self.cache_id, partition_id],
            )
            row = cursor.fetchone()
            return 0 if row is None else int(row[0])

    def clear_fence(self, partition_id: str, count: int) -> None:
        """Forget the misses just made good, unless more were recorded meanwhile."""
        with self._cursor() as cursor:
            cursor.execute(
                f"UPDATE {TABLE} SET misses = 0 "  # noqa: S608
                "WHERE cache = %s AND partition = %s AND misses = %s",
                [self.cache_id, partition_id, count],
            )
