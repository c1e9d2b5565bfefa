"""The last hour as inline SVG: geometry computed here, markup in the template.

Only numbers reach the SVG, so there is nothing to escape and nothing to load.
"""

from __future__ import annotations

import math
from typing import Any

WIDTH, HEIGHT = 360, 90
PAD = 4


def chart(title: str, values: list[float | None], unit: str, top: float | None = None) -> dict:
    """A line chart of one value a minute; gaps (None) where nothing was measured."""
    known = [v for v in values if v is not None]
    top = top or _nice(max(known, default=0.0))
    step = (WIDTH - 2 * PAD) / max(len(values) - 1, 1)
    points = [
        (round(PAD + i * step, 1), _y(v, top), v) for i, v in enumerate(values) if v is not None
    ]
    return {
        "title": title,
        "unit": unit,
        "width": WIDTH,
        "height": HEIGHT,
        "top": top,
        "last": known[-1] if known else None,
        "lines": [" ".join(f"{x},{y}" for x, y, _ in run) for run in _runs(values, points)],
        "dots": [{"x": x, "y": y, "value": v} for x, y, v in points],
        "grid": [round(PAD + (HEIGHT - 2 * PAD) * f, 1) for f in (0.0, 0.5, 1.0)],
    }


def charts(series: dict[str, list]) -> list[dict[str, Any]]:
    hit_rate = [None if v is None else round(v * 100, 1) for v in series["hit_rate"]]
    return [
        chart("Hit rate", hit_rate, "%", top=100.0),
        chart("Operations per second", series["ops_per_second"], "/s"),
        chart("p95 read latency", series["p95_ms"], "ms"),
    ]


def _y(value: float, top: float) -> float:
    share = min(max(value / top, 0.0), 1.0) if top else 0.0
    return round(HEIGHT - PAD - share * (HEIGHT - 2 * PAD), 1)


def _runs(values: list[float | None], points: list[tuple]) -> list[list[tuple]]:
    """Consecutive measured minutes, each drawn as one polyline."""
    runs: list[list[tuple]] = []
    it = iter(points)
    previous_known = False
    for value in values:
        if value is None:
            previous_known = False
            continue
        point = next(it)
        if previous_known:
            runs[-1].append(point)
        else:
            runs.append([point])
        previous_known = True
    return [run for run in runs if len(run) > 1]


def _nice(value: float) -> float:
    """A round upper bound for the axis: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)
