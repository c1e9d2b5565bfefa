"""Writes the model signals cannot see: raw SQL, and the database's own cascades.

Signals and the wrapped QuerySet methods (invalidation.py) see every write the
ORM makes. Two kinds of write bypass them, and are caught here, at the SQL
level, by an execute wrapper on every database connection:

- **Raw SQL** (``connection.cursor().execute(...)``, ``Manager.raw`` writes,
  a third-party library's SQL): a statement not sent by the ORM's compilers
  that contains a write keyword (UPDATE, INSERT, DELETE, TRUNCATE, MERGE)
  invalidates everything cached about every registered model whose table it
  names (its model tag and its whole family of instance tags), locked before
  the statement runs and invalidated after it (at COMMIT in a transaction),
  exactly as ``QuerySet.update()`` is. Naming is matched on the text, so a
  table named anywhere in a writing statement counts: more invalidation than
  needed at worst, never less.
- **Database cascades** (PostgreSQL): a foreign key declared ``ON DELETE
  CASCADE``/``SET NULL``/``SET DEFAULT`` in the database (a migration's
  RunSQL, Django's ``DB_CASCADE`` where it exists) changes rows no signal
  reports. The catalog is read once per connection alias (``pg_constraint``),
  and a DELETE or TRUNCATE of a table, from the ORM or not, invalidates the
  registered models whose tables reference it that way, transitively.

Not seen: writes made inside database functions, triggers or procedures, and
writes by other programs; call ``invalidate_model()`` after those.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import defaultdict
from typing import Any

from django.db import connections
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate
from django.db.models.sql import compiler

from . import snapshots, transactions
from .registry import family_tag, model_tag, registered_models, registration_for

_WRITE = re.compile(r"\b(update|insert|delete|truncate|merge)\b", re.IGNORECASE)
_FIRST_WORD = re.compile(r"\s*(\w+)")
_WRITING_CLAUSE = re.compile(
    r"\b(insert\s+into|delete\s+from|update\s+\S+\s+set|merge\s+into|truncate)\b", re.I
)
_DELETED_TABLE = re.compile(
    r'^\s*(?:delete\s+from|truncate(?:\s+table)?)\s+(?:only\s+)?["`]?([\w$]+)["`]?', re.IGNORECASE
)
# How far above the execute wrapper an ORM compiler's frame can be (Django's
# cursor wrappers and the project's own execute wrappers lie in between).
ORM_SEARCH = 16
_ORM_CODES = {
    vars(klass)["execute_sql"].__code__
    for klass in vars(compiler).values()
    if isinstance(klass, type) and "execute_sql" in vars(klass)
}

_lock = threading.Lock()
_cascades: dict[str, dict[str, set[str]]] = {}  # alias -> table -> tables its deletes reach


def _from_the_orm() -> bool:
    frame: Any = sys._getframe(2)
    for _ in range(ORM_SEARCH):
        if frame is None:
            return False
        if frame.f_code in _ORM_CODES:
            return True
        frame = frame.f_back
    return False


_tables_of: tuple[tuple[Any, ...], dict[str, list[Any]]] = ((), {})


def _tables() -> dict[str, list[Any]]:
    """{db_table: [registered models stored there]}, m2m tables under both their models
    (built again only when the registry changed)."""
    global _tables_of
    models = tuple(registered_models())
    known, tables = _tables_of
    if known == models:
        return tables
    found: dict[str, list[Any]] = defaultdict(list)
    for model in models:
        found[model._meta.db_table.lower()].append(model)
        for field in model._meta.local_many_to_many:
            through = field.remote_field.through
            found[through._meta.db_table.lower()].append(model)  # type: ignore[union-attr]
    _tables_of = (models, dict(found))
    return _tables_of[1]


def _named(sql: str, tables: dict[str, list[Any]]) -> set[Any]:
    lowered = sql.lower()
    return {
        model
        for table, models in tables.items()
        if table in lowered and re.search(rf"(?<![\w$]){re.escape(table)}(?![\w$])", lowered)
        for model in models
    }


def _cascaded(alias: str, sql: str, tables: dict[str, list[Any]]) -> set[Any]:
    match = _DELETED_TABLE.match(sql)
    if match is None:
        return set()
    reached = cascades(alias).get(match.group(1).lower(), set())
    return {model for table in reached for model in tables.get(table, ())}


def cascades(alias: str) -> dict[str, set[str]]:
    """{table: every table a delete from it reaches by the database's own cascades}."""
    with _lock:
        known = _cascades.get(alias)
    if known is not None:
        return known
    connection = connections[alias]
    direct: dict[str, set[str]] = defaultdict(set)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT referenced.relname, referencing.relname FROM pg_constraint c "
                "JOIN pg_class referenced ON referenced.oid = c.confrelid "
                "JOIN pg_class referencing ON referencing.oid = c.conrelid "
                "WHERE c.contype = 'f' AND c.confdeltype IN ('c', 'n', 'd')"
            )
            for referenced, referencing in cursor.fetchall():
                direct[referenced.lower()].add(referencing.lower())
    reach: dict[str, set[str]] = {}
    for table in direct:
        seen, todo = set(), [table]
        while todo:
            for child in direct.get(todo.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        reach[table] = seen
    with _lock:
        _cascades[alias] = reach
    return reach


def forget_cascades(**_: Any) -> None:
    """After a migration the foreign keys may differ: read the catalog again."""
    with _lock:
        _cascades.clear()


def _tags(models: set[Any]) -> dict[str, set[str]]:
    tags: dict[str, set[str]] = defaultdict(set)
    for model in models:
        tags[registration_for(model).cache_alias] |= {model_tag(model), family_tag(model)}
    return tags


def watch(execute: Any, sql: Any, params: Any, many: Any, context: Any) -> Any:
    """The execute wrapper: invalidate around a write the signals do not see."""
    if not isinstance(sql, str):
        return execute(sql, params, many, context)
    if sql.lstrip()[:5].lower() in ("set t", "set s", "begin", "start"):
        snapshots.note(context["connection"], sql)
    if _WRITE.search(sql) is None:
        return execute(sql, params, many, context)
    first = _FIRST_WORD.match(sql)
    if first is not None and first.group(1).lower() in ("select", "savepoint", "release"):
        if _WRITING_CLAUSE.search(sql) is None:
            return execute(sql, params, many, context)  # SELECT ... FOR UPDATE and the like
    alias = context["connection"].alias
    tables = _tables()
    touched = _cascaded(alias, sql, tables) if tables else set()
    if tables and not _from_the_orm():
        touched |= _named(sql, tables)
    if not touched:
        return execute(sql, params, many, context)
    tags = _tags(touched)
    model = next(iter(touched))
    transactions.before(model, tags, alias)
    transactions.confirm_now(alias)  # in autocommit the statement commits as it runs
    result = execute(sql, params, many, context)
    transactions.after(model, tags, alias)
    return result


transactions.SPAN_CODES.add(watch.__code__)  # the write runs inside it


def _install(sender: Any, connection: Any, **_: Any) -> None:
    # First in the list, as transactions' own hook: a ``with execute_wrapper()``
    # block pops the list's last entry when it ends, never this one.
    if watch not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, watch)


def install() -> None:
    """Watch every connection opened from now on, and those already open."""
    connection_created.connect(_install, dispatch_uid="django_tiercache.raw_sql")
    post_migrate.connect(forget_cascades, dispatch_uid="django_tiercache.raw_sql.cascades")
    for connection in connections.all(initialized_only=True):
        _install(None, connection)
