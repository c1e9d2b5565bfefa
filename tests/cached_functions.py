"""Functions decorated with ``cached``, imported by the tests and their worker processes."""

from __future__ import annotations

import datetime
import decimal

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
