"""Number formats of the statistics page; every filter returns plain (escaped) text.

A figure the report does not have (None, or a key a row lacks, which the
template engine renders as "") shows as a dash: the page must render whatever
part of the report is missing, above all while Redis is down.
"""

from __future__ import annotations

import datetime
from typing import Any

from django import template

register = template.Library()

NOTHING = "–"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@register.filter
def percent(value: Any) -> str:
    """0.8123 -> "81.2%"."""
    return f"{value * 100:.1f}%" if _number(value) else NOTHING


@register.filter
def ms(value: Any) -> str:
    """A duration in milliseconds, with the precision it deserves."""
    if not _number(value):
        return NOTHING
    return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"


@register.filter
def ms_number(value: Any) -> str:
    """As ms, without the unit, for a table that names it once in its header."""
    return ms(value).removesuffix(" ms")


@register.filter
def count(value: Any) -> str:
    """12345 -> "12,345"; None -> a dash."""
    if value is None or value == "":
        return NOTHING
    return f"{value:,.0f}" if _number(value) else str(value)


@register.filter
def target(row: dict[str, Any]) -> str:
    """A verdict row's value and target, e.g. "81.2% (target >= 80.0%)"."""
    show = percent if row["unit"] == "%" else ms
    return f"{show(row['value'])} (target {row['sense']} {show(row['target'])})"


@register.filter
def timestamp(value: Any) -> str:
    """Epoch seconds -> "2026-11-26 03:20:11 UTC"."""
    if value is None:
        return "never"
    moment = datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@register.filter
def seconds(value: Any) -> str:
    """A signed number of seconds: 0.0021 -> "+2.1 ms", -1.5 -> "-1.50 s"."""
    if not _number(value):
        return NOTHING
    return f"{value * 1000:+.1f} ms" if abs(value) < 1 else f"{value:+.2f} s"


@register.filter
def persistence(value: dict[str, Any]) -> str:
    """{"rdb": "3600 1", "aof": False, ...} -> "RDB save 3600 1, AOF off"."""
    rdb = value.get("rdb")
    if rdb is None:
        rdb_text = "RDB unknown (CONFIG refused)"
    else:
        rdb_text = "RDB off" if rdb == "off" else f"RDB save {rdb}"
    aof = value.get("aof")
    aof_text = "AOF unknown" if aof is None else ("AOF on" if aof else "AOF off")
    return f"{rdb_text}, {aof_text}"
