"""The figures of a cache, summed over every process, as one report.

The admin page and its JSON read report(), a plain dict of numbers and
strings, so the JSON view can return it as it is; the Prometheus view reads
scrape(), the totals alone. When the Redis that keeps the shared figures cannot
be read, both fall back to this process's own counters (since it started) and
say so: an outage is when the page is needed most.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches

from ..backend import MisconfiguredCache
from . import partitions as partitions_module
from . import recent, topology
from .collection import bucket_bounds, recorder_of, tiercache_aliases
from .conf import get_config
from .publishing import MINUTES, Snapshot, current_minute, field_name, process_key, publish
from .redaction import redact_text

logger = logging.getLogger("django_tiercache")

PERCENTILES = (0.50, 0.95, 0.99)
RECENT_MINUTES = 5  # the window of the "now" throughput
LIVE_INTERVALS = 3  # a process that published within this many STATS_INTERVALs is live


@dataclass
class Figures:
    """Published fields, parsed. Latency is keyed (operation, partition or "*")."""

    counts: Counter = field(default_factory=Counter)  # (kind, tier) for hit/miss/set/delete
    invalidations: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # (operation, partition)
    events: Counter = field(default_factory=Counter)  # (event, partition)
    trips: Counter = field(default_factory=Counter)
    latency: dict[tuple[str, str], Counter] = field(default_factory=dict)
    latency_ns: Counter = field(default_factory=Counter)
    consistency: Counter = field(default_factory=Counter)  # "ok" / "stale" samples

    def total(self, kind: str) -> int:
        return sum(v for (k, _), v in self.counts.items() if k == kind)

    def tiers(self) -> list[str]:
        return sorted({tier for _, tier in self.counts})

    def histogram(self, operation: str, partition: str | None = None) -> Counter:
        merged: Counter = Counter()
        for (op, part), buckets in self.latency.items():
            if op == operation and (partition is None or part == partition):
                merged.update(buckets)
        return merged


def parse(fields: dict[str, int]) -> Figures:
    figures = Figures()
    for name, value in fields.items():
        kind, _, rest = name.partition("|")
        if kind in ("hit", "miss", "set", "delete"):
            figures.counts[(kind, rest)] += value
        elif kind == "inv":
            figures.invalidations[rest] += value
        elif kind in ("err", "event"):
            what, _, partition = rest.partition("|")
            # The hot-key record names its server by URL: never show a password.
            key = (what, redact_text(partition))
            (figures.errors if kind == "err" else figures.events)[key] += value
        elif kind == "trip":
            figures.trips[rest] += value
        elif kind == "cons":
            figures.consistency[rest] += value
        elif kind == "lat":
            operation, _, rest = rest.partition("|")
            partition, _, index = rest.rpartition("|")
            key = (operation, partition or "*")
            figures.latency.setdefault(key, Counter())[int(index)] += value
        elif kind == "ns":
            operation, _, partition = rest.partition("|")
            figures.latency_ns[(operation, partition or "*")] += value
    return figures


def percentile(buckets: Counter, q: float) -> float | None:
    """The q-quantile in milliseconds, interpolated inside its bucket."""
    count = sum(buckets.values())
    if not count:
        return None
    rank, seen = q * count, 0
    for index in sorted(buckets):
        if seen + buckets[index] >= rank:
            low, high = bucket_bounds(index)
            share = (rank - seen) / buckets[index]
            return round((low + (high - low) * share) / 1000, 3)
        seen += buckets[index]
    return round(bucket_bounds(max(buckets))[1] / 1000, 3)


def latency_row(operation: str, buckets: Counter, ns: int) -> dict[str, Any]:
    calls = sum(buckets.values())
    row: dict[str, Any] = {"operation": operation, "calls": calls}
    row["mean_ms"] = round(ns / calls / 1e6, 3) if calls else None
    for q in PERCENTILES:
        row[f"p{round(q * 100)}_ms"] = percentile(buckets, q)
    return row


def latency_rows(figures: Figures) -> list[dict[str, Any]]:
    operations = sorted({op for op, _ in figures.latency})
    rows = []
    for op in operations:
        ns = sum(v for (o, _), v in figures.latency_ns.items() if o == op)
        rows.append(latency_row(op, figures.histogram(op), ns))
    return rows


def rates(figures: Figures) -> dict[str, Any]:
    hits, misses = figures.total("hit"), figures.total("miss")
    reads = hits + misses
    return {
        "hits": hits,
        "misses": misses,
        "sets": figures.total("set"),
        "deletes": figures.total("delete"),
        "invalidations": sum(figures.invalidations.values()),
        "errors": sum(figures.errors.values()),
        "trips": sum(figures.trips.values()),
        "tampered": sum(v for (e, _), v in figures.events.items() if e == "tampered"),
        "hit_rate": round(hits / reads, 4) if reads else None,
        "miss_rate": round(misses / reads, 4) if reads else None,
        "consistency": consistency(figures),
        "by_tier": {
            tier: {kind: figures.counts[(kind, tier)] for kind in ("hit", "miss", "set", "delete")}
            for tier in figures.tiers()
        },
    }


def consistency(figures: Figures) -> dict[str, Any]:
    """The consistency sampler's figures: samples, stale ones, and the nines they show.

    "nines" is -log10 of the stale share (0 stale in 10,000 samples: at least 4
    nines, given as 4 with "at_least"); None without samples.
    """
    stale, ok = figures.consistency["stale"], figures.consistency["ok"]
    samples = stale + ok
    if not samples:
        return {"samples": 0, "stale": 0, "nines": None, "at_least": False}
    nines = math.log10(samples) if not stale else -math.log10(stale / samples)
    return {"samples": samples, "stale": stale, "nines": round(nines, 2), "at_least": not stale}


def operations_in(figures: Figures) -> int:
    return sum(figures.total(kind) for kind in ("hit", "miss", "set", "delete"))


# -- the last hour --


def series(snapshot: Snapshot) -> dict[str, list]:
    """One point a minute for the last hour: hit rate, operations/s, p95 of reads."""
    last = current_minute(snapshot.now)
    minutes = list(range(last - MINUTES + 1, last + 1))
    hit_rate, ops, p95 = [], [], []
    for minute in minutes:
        figures = parse(snapshot.minutes.get(minute, {}))
        reads = figures.total("hit") + figures.total("miss")
        hit_rate.append(round(figures.total("hit") / reads, 4) if reads else None)
        seconds = snapshot.now - minute * 60 if minute == last else 60.0
        ops.append(round(operations_in(figures) / max(seconds, 1.0), 2))
        p95.append(percentile(figures.histogram("read"), 0.95))
    return {"minutes": minutes, "hit_rate": hit_rate, "ops_per_second": ops, "p95_ms": p95}


def last_hour(snapshot: Snapshot) -> Figures:
    fields: Counter = Counter()
    for minute_fields in snapshot.minutes.values():
        fields.update(minute_fields)
    return parse(dict(fields))


def recent_throughput(snapshot: Snapshot) -> float:
    """Operations per second over the last few minutes."""
    last = current_minute(snapshot.now)
    ops = sum(
        operations_in(parse(snapshot.minutes.get(m, {})))
        for m in range(last - RECENT_MINUTES + 1, last + 1)
    )
    seconds = (RECENT_MINUTES - 1) * 60 + (snapshot.now - last * 60)
    return round(ops / max(seconds, 1.0), 2)


# -- targets --


def verdicts(hour: dict[str, Any], since_reset: dict[str, Any], read_p95: float | None) -> list:
    """Hit rate, miss rate and p95 read latency against the targets: pass, warn or no data."""
    targets = get_config()["STATS_TARGETS"]
    figures, window = (hour, "last hour") if hour["hit_rate"] is not None else (since_reset, "")
    window = window or "since reset"
    checks = [
        ("hit rate", figures["hit_rate"], targets["HIT_RATE"], ">=", "%"),
        ("miss rate", figures["miss_rate"], targets["MISS_RATE"], "<=", "%"),
        ("p95 read latency", read_p95, targets["P95_MS"], "<=", "ms"),
    ]
    rows = []
    for name, value, target, sense, unit in checks:
        if value is None:
            status = "no data"
        else:
            ok = value >= target if sense == ">=" else value <= target
            status = "pass" if ok else "warn"
        rows.append(
            {"name": name, "value": value, "target": target, "sense": sense, "unit": unit,
             "status": status, "window": window}
        )  # fmt: skip
    return rows


# -- the report --


def snapshot_of(cache: Any) -> Snapshot | None:
    """This process's latest counts published, then the summed figures read back."""
    recorder = recorder_of(cache)
    if recorder.sink is None:
        return None
    publish(recorder)  # type: ignore[arg-type]
    snapshot = recorder.sink.read()
    gone = [k for k, v in snapshot.processes.items() if snapshot.now - v["seen"] > MINUTES * 60]
    recorder.sink.forget_processes(gone)
    for key in gone:
        del snapshot.processes[key]
    return snapshot


def own_fields(recorder: Any) -> dict[str, int]:
    """What this process counted since it started, as published field names."""
    return {field_name(key): value for key, value in recorder.totals().items()}


def own_snapshot(recorder: Any) -> Snapshot:
    """This process's counters as a snapshot: what the page shows while Redis is down."""
    now = time.time()
    return Snapshot(
        totals=own_fields(recorder),
        minutes={},
        processes={process_key(): {"seen": now}},
        reset_at=None,
        shared=False,
        now=now,
    )


def report(alias: str) -> dict[str, Any]:
    """Everything the page shows about one cache; kept a moment for the JSON view."""
    cache = caches[alias]
    infos, nodes = describe_servers(cache)
    base: dict[str, Any] = {
        "alias": alias,
        "generated_at": time.time(),
        "down": [info["name"] for info in infos if not info.get("reachable")],
        **nodes,
    }
    recorder = recorder_of(cache)
    if isinstance(cache, MisconfiguredCache):
        message = redact_text(cache.message)
        base["error"] = f"This cache cannot be built: {message} (see manage.py check)."
        found = {**base, "unbuilt": True, "partitions": []}
    elif recorder.sink is None:
        base["error"] = "Statistics are off (TIERCACHE['STATS'] = False)."
        found = {**base, "partitions": infos, **_partition_summary(infos)}
    else:
        try:
            snapshot = snapshot_of(cache)
        except Exception as exc:  # noqa: BLE001 - the page shows what it could not read
            logger.warning("statistics of cache %r unreadable: %s", alias, redact_text(repr(exc)))
            base["error"] = (
                f"The shared statistics could not be read ({redact_text(repr(exc))}): "
                "the figures below are this process only, since it started."
            )
            snapshot = own_snapshot(recorder)
        found = {**base, **_figures_report(snapshot, infos)}  # type: ignore[arg-type]
    recent.remember(("report", alias, recorder), found)
    return found


def describe_servers(cache: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The partitions' rows, and the servers behind them (cluster nodes, Sentinel replicas)."""
    partitions = getattr(cache, "_partitions", [])
    infos, probes = partitions_module.describe_all(partitions)
    return infos, topology.servers(partitions, infos, probes)


def recent_report(alias: str) -> dict[str, Any]:
    """report(), or the one made at most STATS_INTERVAL seconds ago in this process."""
    recorder = recorder_of(caches[alias])
    interval = get_config()["STATS_INTERVAL"]
    return recent.remembered(("report", alias, recorder), interval, lambda: report(alias))


def _figures_report(snapshot: Snapshot, infos: list[dict[str, Any]]) -> dict[str, Any]:
    totals, hour = parse(snapshot.totals), last_hour(snapshot)
    hour_rates, total_rates = rates(hour), rates(totals)
    hour_latency = latency_rows(hour)
    read_p95 = next((r["p95_ms"] for r in hour_latency if r["operation"] == "read"), None)
    if read_p95 is None:
        read_p95 = next(
            (r["p95_ms"] for r in latency_rows(totals) if r["operation"] == "read"), None
        )
    return {
        "shared": snapshot.shared,
        "scope": "fleet" if snapshot.shared else "process",
        "reset_at": snapshot.reset_at,
        "processes": _processes(snapshot),
        "since_reset": total_rates,
        "last_hour": {**hour_rates, "ops_per_second": recent_throughput(snapshot)},
        "targets": verdicts(hour_rates, total_rates, read_p95),
        "latency": {"last_hour": hour_latency, "since_reset": latency_rows(totals)},
        "invalidations": [{"prefix": p, "count": c} for p, c in totals.invalidations.most_common()],
        "errors": [
            {"operation": op, "partition": part, "count": c}
            for (op, part), c in sorted(totals.errors.items())
        ],
        "events": [
            {"event": e, "partition": part, "count": c}
            for (e, part), c in sorted(totals.events.items())
        ],
        "partitions": [_with_figures(info, totals) for info in infos],
        **_partition_summary(infos),
        "series": series(snapshot),
    }


def _partition_summary(infos: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "servers": partitions_module.server_totals(infos),
        "spread": partitions_module.spread(infos),
    }


def _with_figures(info: dict[str, Any], totals: Figures) -> dict[str, Any]:
    name = info["name"]
    buckets: Counter = Counter()
    for (_, part), hist in totals.latency.items():
        if part == name:
            buckets.update(hist)
    return {
        **info,
        "calls": sum(buckets.values()),
        "p95_ms": percentile(buckets, 0.95),
        "errors": sum(c for (_, part), c in totals.errors.items() if part == name),
        "trips": totals.trips[name],
    }


def _processes(snapshot: Snapshot) -> dict[str, Any]:
    interval = get_config()["STATS_INTERVAL"]
    live = [
        k
        for k, v in snapshot.processes.items()
        if snapshot.now - v["seen"] <= LIVE_INTERVALS * interval
    ]
    return {"live": len(live), "seen_last_hour": len(snapshot.processes), "names": sorted(live)}


def reports() -> list[dict[str, Any]]:
    """One report per TierCache alias in settings.CACHES."""
    return [report(alias) for alias in tiercache_aliases()]


def recent_reports() -> list[dict[str, Any]]:
    return [recent_report(alias) for alias in tiercache_aliases()]


# -- what a scrape needs --


@dataclass
class Scrape:
    """One cache as the Prometheus view sees it."""

    alias: str
    figures: Figures  # summed over every process (Redis), or this process's if shared is False
    shared_up: bool | None  # the shared figures were read; None: the cache shares none
    own: Figures | None  # this process's counters, when the shared ones could not be read
    partitions: list[dict[str, Any]]
    nodes: list[dict[str, Any]] = field(default_factory=list)  # cluster nodes, Sentinel servers


def scrape(alias: str) -> Scrape:
    """The totals and the partitions, read at most once per STATS_INTERVAL per process.

    No publication and no minute hashes: one HGETALL and one probe per server.
    """
    cache = caches[alias]
    recorder = recorder_of(cache)
    interval = get_config()["STATS_INTERVAL"]
    return recent.remembered(("scrape", alias, recorder), interval, lambda: _scrape(alias))


def _scrape(alias: str) -> Scrape:
    cache = caches[alias]
    infos, servers = describe_servers(cache)
    nodes = servers["nodes"]
    recorder = recorder_of(cache)
    if recorder.sink is None:
        return Scrape(alias, Figures(), None, None, infos, nodes)
    try:
        totals = recorder.sink.read_totals()
    except Exception as exc:  # noqa: BLE001 - this process's counters stand in for them
        logger.warning("statistics of cache %r unreadable: %s", alias, redact_text(repr(exc)))
        return Scrape(alias, Figures(), False, parse(own_fields(recorder)), infos, nodes)
    shared = True if recorder.sink.shared else None
    return Scrape(alias, parse(totals), shared, None, infos, nodes)
