"""What a cached_queryset() entry is keyed by, and which models it reads.

The key is the whole queryset, not only its main SQL: the shape of its rows
(instances, ``values()``, ``values_list(flat=True)``...), and every
``prefetch_related`` lookup with the queryset of each ``Prefetch`` and its
``to_attr``, so that two querysets with the same SQL but different results never
share an entry. The tags name every model any part of it reads: the main
query's tables (joins and ``select_related``), those of the queries nested in
it (``Subquery``, ``Exists``, ``__in=queryset``, the parts of a union) and, for
each prefetch, the models along its path and those its own queryset reads. A
part that cannot be keyed safely raises TypeError naming it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models import Prefetch
from django.db.models.constants import LOOKUP_SEP
from django.db.models.sql.query import Query


def queryset_key(qs: models.QuerySet) -> str:
    digest = hashlib.blake2b(repr(_identity(qs)).encode(), digest_size=16).hexdigest()
    return f"tiercache:qs:{digest}"


def _identity(qs: models.QuerySet) -> tuple:
    sql, params = qs.query.sql_with_params()
    shape = (qs._iterable_class.__qualname__, qs._fields)  # type: ignore[attr-defined]
    prefetches = tuple(_prefetch_identity(p) for p in qs._prefetch_related_lookups)  # type: ignore[attr-defined]
    return (qs.db, sql, params, shape, prefetches)


def _prefetch_identity(lookup: Any) -> tuple:
    if isinstance(lookup, str):
        return ("lookup", lookup)
    if isinstance(lookup, Prefetch):
        inner = None if lookup.queryset is None else _identity(lookup.queryset)
        return ("prefetch", lookup.prefetch_through, lookup.to_attr, inner)
    raise TypeError(f"cached_queryset() cannot key the prefetch_related lookup {lookup!r}")


def models_read(qs: models.QuerySet) -> set[type[models.Model]]:
    """Every model whose table any part of the queryset reads."""
    found = _tables_read(qs)
    for lookup in qs._prefetch_related_lookups:  # type: ignore[attr-defined]
        through = lookup if isinstance(lookup, str) else lookup.prefetch_through
        found |= _along(qs.model, through)
        if isinstance(lookup, Prefetch) and lookup.queryset is not None:
            found |= models_read(lookup.queryset)
    return found


def _tables_read(qs: models.QuerySet) -> set[type[models.Model]]:
    query = qs.query.clone()
    query.get_compiler(qs.db).setup_query()  # resolves select_related joins into alias_map
    tables = _query_tables(query)
    return {m for m in apps.get_models(include_auto_created=True) if m._meta.db_table in tables}


def _query_tables(query: Query) -> set[str]:
    """The tables a query reads: its joins, and those of every query nested in it."""
    tables = {join.table_name for join in query.alias_map.values()}
    if query.model is not None:
        tables.add(query.model._meta.db_table)
    for inner in _nested_queries(query):
        tables |= _query_tables(inner)
    return tables


def _nested_queries(query: Query) -> list[Query]:
    """Queries inside `query`: ``Subquery``/``Exists`` and ``__in=queryset`` in its filters,
    annotations and ordering, and the parts of a union (each reads tables of its own)."""
    found: list[Query] = list(query.combined_queries)
    order = [e for e in query.order_by if hasattr(e, "get_source_expressions")]
    pending: list[Any] = [query.where, *query.annotations.values(), *order]
    while pending:
        node = pending.pop()
        if isinstance(node, Query):
            found.append(node)
        elif hasattr(node, "children"):  # a WhereNode
            pending.extend(node.children)
        elif hasattr(node, "get_source_expressions"):
            pending.extend(e for e in node.get_source_expressions() if e is not None)
    return found


def _along(model: type[models.Model], path: str) -> set[type[models.Model]]:
    """The models a prefetch path walks through (m2m tables included)."""
    found: set[type[models.Model]] = set()
    current = model
    for name in path.split(LOOKUP_SEP):
        try:
            field = current._meta.get_field(name)
        except FieldDoesNotExist:
            # A GenericForeignKey or a property prefetch_related accepts: its
            # rows cannot be named here, so the result could not be invalidated.
            raise TypeError(
                f"cached_queryset() cannot tell which model the prefetch path {path!r} reads "
                f"at {name!r} (not a relation of {current._meta.label})"
            ) from None
        related = getattr(field, "related_model", None)
        if related is None or isinstance(related, str):
            raise TypeError(f"cached_queryset(): {path!r} at {name!r} is not a relation")
        through = getattr(getattr(field, "remote_field", None), "through", None)
        if through is None and hasattr(field, "field"):  # a reverse many-to-many
            through = getattr(field.field.remote_field, "through", None)
        if isinstance(through, type):
            found.add(through)
        found.add(related)
        current = related
    return found
