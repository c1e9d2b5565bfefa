"""A product page (read) and a product edit (write), the same two views for every system.

Only ``read_product`` (and the cache-aside delete after a write) differs between systems.
Each request counts its database queries; a read that ran none was a hit.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.http import JsonResponse

from .models import Product
from .shared import FIELDS, Shared

SYSTEM = settings.LOAD_SYSTEM
SHARED = Shared(settings.LOAD_SHM, settings.LOAD_PRODUCTS)
READS, WRITES, READ_QUERIES, WRITE_QUERIES, HITS, STALE = range(len(FIELDS))
CACHE_ASIDE = SYSTEM in ("django", "djredis")


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
    SHARED.count(READS)
    SHARED.count(READ_QUERIES, queries.n)
    if not queries.n:
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
        with transaction.atomic():
            rows = Product.objects.select_for_update()
            if SYSTEM == "cacheops":
                rows = rows.nocache()
            product = rows.get(pk=pk)
            product.version += 1
            product.stock = (product.stock + 1) % 1000
            product.save()
    if CACHE_ASIDE:
        cache.delete(_key(pk))  # hand-written invalidation, after the commit
    SHARED.commit(pk, product.version)
    SHARED.count(WRITES)
    SHARED.count(WRITE_QUERIES, queries.n)
    return JsonResponse({"id": pk, "version": product.version})
