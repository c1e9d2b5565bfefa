"""Number formats of the statistics page; every filter returns plain (escaped) text."""

from __future__ import annotations

import datetime
from typing import Any

from django import template

register = template.Library()

NOTHING = "–"


@register.filter
def percent(value: Any) -> str:
    """0.8123 -> "81.2%"."""
    return NOTHING if value is None else f"{value * 100:.1f}%"


@register.filter
def ms(value: Any) -> str:
    """A duration in milliseconds, with the precision it deserves."""
    if value is None:
        return NOTHING
    return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"


@register.filter
def count(value: Any) -> str:
    """12345 -> "12,345"; None -> a dash."""
    if value is None:
        return NOTHING
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


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
