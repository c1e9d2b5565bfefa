"""Functions decorated with ``cached``, imported by the tests and their worker processes."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import os

from django_tiercache import cached

calls: list[tuple] = []


@cached(timeout=60, tags=lambda shop_id, **_: [f"shop.shop:{shop_id}"])
def best_sellers(shop_id: int, since: datetime.date | None = None, limit: int = 3) -> list:
    calls.append(("best_sellers", shop_id))
    return [shop_id * 10 + i for i in range(limit)]


@cached(timeout=60)
def price(sku: str, amount: decimal.Decimal, options: dict) -> str:
    calls.append(("price", sku))
    return f"{sku}:{amount}"


@cached(timeout=60)
async def async_total(order_id: int) -> int:
    calls.append(("async_total", order_id))
    return order_id * 2


async def _slow_count(counter_url: str, counter: str) -> str:
    import redis

    redis.Redis.from_url(counter_url).incr(counter)  # counted in Redis: tests sum every process
    await asyncio.sleep(0.2)  # a slow computation: the other callers arrive while it runs
    return f"computed by {os.getpid()}"


@cached(timeout=60)
async def slow_report(counter_url: str, counter: str) -> str:
    return await _slow_count(counter_url, counter)
