"""Rows, ratios against the targets, and the printed / JSON report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TARGETS = [
    # (label, numerator row, denominator row, limit)
    ("tagged get (1 partition) / django-redis get", "tier1.get", "djredis.get", 1.2),
    (
        "get_many(100) over 4 partitions / django-redis get_many(100)",
        "tier4.get_many",
        "djredis.get_many",
        1.2,
    ),
    (
        "invalidate_tags(big tag) / invalidate_tags(1-entry tag), 1 partition",
        "tier1.inv_big",
        "tier1.inv_small",
        2.0,
    ),
    (
        "invalidate_tags(big tag) / invalidate_tags(1-entry tag), 4 partitions",
        "tier4.inv_big",
        "tier4.inv_small",
        2.0,
    ),
]


@dataclass
class Row:
    key: str
    label: str
    samples_ns: list[float] = field(default_factory=list)
    calls_per_sample: int = 1
    note: str = ""

    @property
    def median_us(self) -> float:
        return percentile(self.samples_ns, 50) / 1000

    @property
    def p95_us(self) -> float:
        return percentile(self.samples_ns, 95) / 1000


@dataclass
class Settings:
    rounds: int
    sample_ms: float
    big_entries: int
    quick: bool


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile; enough for a few dozen samples."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * pct / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


DISPLAY_ORDER = [
    "tier1.get",
    "tier1.get_untagged",
    "tier4.get",
    "djredis.get",
    "django.get",
    "locmem.get",
    "tier1.get_many",
    "tier4.get_many",
    "djredis.get_many",
    "tier1.miss_one",
    "djredis.miss_one",
    "tier1.miss_many",
    "tier4.miss_many",
    "djredis.miss_many",
]


def display_position(row: Row) -> tuple[int, int]:
    # Invalidation rows keep the order in which they were produced.
    if row.key in DISPLAY_ORDER:
        return (0, DISPLAY_ORDER.index(row.key))
    return (1, 0)


def ratios(rows: dict[str, Row]) -> list[dict[str, Any]]:
    out = []
    for label, num, den, limit in TARGETS:
        if not (num in rows and den in rows and rows[num].samples_ns and rows[den].samples_ns):
            out.append({"label": label, "value": None, "limit": limit, "status": "N/A"})
            continue
        value = rows[num].median_us / rows[den].median_us
        status = "PASS" if value <= limit else "MISS"
        out.append({"label": label, "value": value, "limit": limit, "status": status})
    return out


def print_header(info: dict[str, Any], cfg: Settings, problem: str) -> None:
    print("django_tiercache backend benchmark")
    print(f"  platform : {info['platform']} ({info['machine']}), {info['cpu_count']} CPUs")
    print(f"  python   : {info['python']}")
    load = ", ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    print(f"  load avg : {load} at start (other work on the machine skews the numbers)")
    extra = ", ".join(info["redis_server_extra"]) or "none"
    print(f"  redis    : shared {info['redis_server_shared']}; extra servers {extra}")
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    print(f"  libraries: {libs}")
    print(
        f"  value    : dict, {info['value_pickled_bytes']} bytes pickled; pickle everywhere "
        "(TierCache and django-redis share django-redis' PickleSerializer)"
    )
    print(
        f"  sampling : {cfg.rounds} samples per operation, ~{cfg.sample_ms:g} ms each; "
        f"invalidation tag covers {cfg.big_entries:,} entries"
    )
    if cfg.quick:
        print(
            "  QUICK MODE: fewer samples and 10,000 (not 100,000) entries for the invalidation case"
        )
    if problem:
        print(f"  TierCache unavailable, its rows are skipped: {problem}")
    print()


def print_table(rows: list[Row]) -> None:
    width = max(len(r.label) for r in rows)
    print(f"{'operation':<{width}} | {'median µs':>10} | {'p95 µs':>10} | {'ops/s':>10}")
    print(f"{'-' * width}-+-{'-' * 10}-+-{'-' * 10}-+-{'-' * 10}")
    for r in rows:
        if not r.samples_ns:
            print(f"{r.label:<{width}} | {'-':>10} | {'-':>10} | {'-':>10}   <- {r.note}")
            continue
        ops = 1e6 / r.median_us if r.median_us > 0 else float("inf")
        line = f"{r.label:<{width}} | {r.median_us:>10.2f} | {r.p95_us:>10.2f} | {ops:>10,.0f}"
        print(line + (f"   <- {r.note}" if r.note else ""))
    print()


def print_ratios(results: list[dict[str, Any]], rows: dict[str, Row]) -> None:
    print("targets (ratio of medians)")
    for r in results:
        value = "n/a" if r["value"] is None else f"{r['value']:.2f}"
        print(f"  [{r['status']:<4}] {r['label']}: {value} (target <= {r['limit']})")
    for alias in ("tier1", "tier4"):
        big, small = rows.get(f"{alias}.inv_big_first"), rows.get(f"{alias}.inv_small_first")
        if big and small:
            ratio = big.median_us / small.median_us
            print(f"  [info] first-call invalidation ratio, {alias}: {ratio:.2f} (one call each)")
    print()


def write_json(
    path: str, info, cfg: Settings, rows: list[Row], results, problem: str, elapsed: float
):
    payload = {
        "machine": info,
        "settings": asdict(cfg),
        "tiercache_unavailable": problem or None,
        "elapsed_s": round(elapsed, 2),
        "results": [
            {
                "key": r.key,
                "operation": r.label,
                "median_us": r.median_us if r.samples_ns else None,
                "p95_us": r.p95_us if r.samples_ns else None,
                "ops_per_s": 1e6 / r.median_us if r.samples_ns and r.median_us > 0 else None,
                "samples": len(r.samples_ns),
                "calls_per_sample": r.calls_per_sample,
                "note": r.note or None,
            }
            for r in rows
        ],
        "ratios": results,
    }
    Path(path).write_text(json.dumps(payload, indent=2) + "\n")
