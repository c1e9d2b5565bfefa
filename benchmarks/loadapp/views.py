"""A product page (read) and a product edit (write), the same two views for every system.

Only ``read_product`` (and the cache-aside delete after a write) differs between systems.
Each request counts its database queries; a read that ran none was a hit.
"""

from __future__ import annotations

from contextvars import ContextVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.backends.signals import connection_created
from django.http import JsonResponse

from .models import Product
from .shared import FIELDS, Shared

SYSTEM = settings.LOAD_SYSTEM
SHARED = Shared(settings.LOAD_SHM, settings.LOAD_PRODUCTS)
READS, WRITES, READ_QUERIES, WRITE_QUERIES, HITS, STALE = range(len(FIELDS))
CACHE_ASIDE = SYSTEM in ("django", "djredis", "ceiling")


class Queries:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, execute, sql, params, many, context):
        self.n += 1
        return execute(sql, params, many, context)


def _key(pk: int) -> str:
    return f"product:{pk}"


if CACHE_ASIDE:

    def read_product(pk: int) -> Product:
        product = cache.get(_key(pk))
        if product is None:
            product = Product.objects.get(pk=pk)
            cache.set(_key(pk), product)
        return product

elif SYSTEM.startswith("tier"):
    from django_tiercache import get_object

    def read_product(pk: int) -> Product:
        return get_object(Product, pk)

else:  # nocache; cacheops caches this query itself

    def read_product(pk: int) -> Product:
        return Product.objects.get(pk=pk)


def read(request, pk: int):
    committed = SHARED.committed(pk)  # before the read: this version is in the database already
    queries = Queries()
    with connection.execute_wrapper(queries):
        product = read_product(pk)
    return _answer_read(product, committed, queries.n)


def _answer_read(product: Product, committed: int, queries: int) -> JsonResponse:
    SHARED.count(READS)
    SHARED.count(READ_QUERIES, queries)
    if not queries:
        SHARED.count(HITS)
    if product.version < committed:
        SHARED.count(STALE)
    return JsonResponse(
        {
            "id": product.pk,
            "name": product.name,
            "description": product.description,
            "price": str(product.price),
            "stock": product.stock,
            "version": product.version,
        }
    )


def write(request, pk: int):
    queries = Queries()
    with connection.execute_wrapper(queries):
        product = _write_row(pk)
    if CACHE_ASIDE:
        cache.delete(_key(pk))  # hand-written invalidation, after the commit
    return _answer_write(pk, product, queries.n)


def _answer_write(pk: int, product: Product, queries: int) -> JsonResponse:
    SHARED.commit(pk, product.version)
    SHARED.count(WRITES)
    SHARED.count(WRITE_QUERIES, queries)
    return JsonResponse({"id": pk, "version": product.version})


# -- the same two views for an ASGI server (benchmarks/loadapp/asgi.py, LOAD_ASYNC=1) --
#
# A miss's query runs in a thread (Django's ORM refuses the event loop), where the counting
# wrapper above cannot see it: every connection counts into the request's own Queries,
# reached through a context variable, which asgiref copies into that thread.

CURRENT: ContextVar[Queries | None] = ContextVar("load_queries", default=None)


def _count_into_current(execute, sql, params, many, context):
    queries = CURRENT.get()
    if queries is not None:
        queries.n += 1
    return execute(sql, params, many, context)


def _on_connection(sender, connection, **kwargs) -> None:
    if _count_into_current not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count_into_current)


if settings.LOAD_ASYNC:
    connection_created.connect(_on_connection)


if CACHE_ASIDE:

    async def aread_product(pk: int) -> Product:
        product = await cache.aget(_key(pk))
        if product is None:
            product = await Product.objects.aget(pk=pk)
            await cache.aset(_key(pk), product)
        return product

elif SYSTEM.startswith("tier"):
    from django_tiercache import aget_object

    async def aread_product(pk: int) -> Product:
        return await aget_object(Product, pk)

else:

    async def aread_product(pk: int) -> Product:
        return await Product.objects.aget(pk=pk)


async def aread(request, pk: int):
    committed = SHARED.committed(pk)
    queries = Queries()
    token = CURRENT.set(queries)
    try:
        product = await aread_product(pk)
    finally:
        CURRENT.reset(token)
    return _answer_read(product, committed, queries.n)


def _write_row(pk: int) -> Product:
    with transaction.atomic():
        rows = Product.objects.select_for_update()
        if SYSTEM == "cacheops":
            rows = rows.nocache()
        product = rows.get(pk=pk)
        product.version += 1
        product.stock = (product.stock + 1) % 1000
        product.save()
    return product


async def awrite(request, pk: int):
    queries = Queries()
    token = CURRENT.set(queries)
    try:
        product = await sync_to_async(_write_row)(pk)
    finally:
        CURRENT.reset(token)
    if CACHE_ASIDE:
        await cache.adelete(_key(pk))
    return _answer_write(pk, product, queries.n)
