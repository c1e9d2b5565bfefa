"""SQL the way another program would send it: past Django's cursor wrappers, unseen."""

from __future__ import annotations

from django.db import connection


def unseen_sql(sql: str, params=()) -> None:
    """Run `sql` on the database connection's DB-API cursor (no execute wrapper sees it)."""
    connection.ensure_connection()
    if connection.vendor == "sqlite":
        sql = sql.replace("%s", "?")
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, params)
    finally:
        cursor.close()
    if connection.get_autocommit() and connection.vendor == "sqlite":
        connection.connection.commit()
