"""The statistics in Prometheus' text format, for ``django_tiercache.urls``' metrics/ view.

The counts are those summed over every process (see publishing.py), so one
scrape of any one process gives the whole fleet: scrape a single target, or
aggregate with max() rather than sum(). Counters restart from zero when the
statistics are reset, which Prometheus' rate() takes in its stride.

While the shared figures cannot be read, tiercache_shared_figures_up is 0 and
the same counters come from this process alone, as tiercache_process_*: other
series, so that a dashboard never mistakes one process for the fleet.

Closed by default (see access.py); read at most once per STATS_INTERVAL per
process (aggregation.scrape), so a scraper every second costs Redis little.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from . import actions as actions_module
from .access import refuse_scrape
from .aggregation import Scrape, scrape
from .collection import EXACT_US, LAST_BUCKET, bucket_bounds, tiercache_aliases

# Without the prometheus extra the URLconf still imports (a missing optional
# library must not take every other URL of the site down with it): the view
# answers 503, and the system check tiercache.E016 names the fix at start-up.
try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
    )
except ImportError as exc:
    unavailable: ImportError | None = exc
else:
    unavailable = None
MISSING = (
    "django_tiercache.urls (the Prometheus metrics/ view) needs prometheus_client: "
    "pip install 'django-tiercache[prometheus]'."
)


# Histogram bounds: the powers of two from 8 µs, which are bucket edges, so no bucket is split.
BOUNDS_US = [bucket_bounds(i)[0] for i in range(EXACT_US, LAST_BUCKET + 1, 4)]

INFO_GAUGES = (
    ("keys", "tiercache_partition_keys", "Keys in the partition's database (all of them)."),
    ("used_memory", "tiercache_partition_memory_used_bytes", "Memory the server uses."),
    ("maxmemory", "tiercache_partition_memory_max_bytes", "The server's maxmemory (0: none)."),
    ("connected_clients", "tiercache_partition_connected_clients", "Clients connected."),
    ("ops_per_second", "tiercache_partition_ops_per_second", "The server's operations/s."),
    (
        "clock_skew_s",
        "tiercache_partition_clock_skew_seconds",
        "The server's clock (TIME) minus this host's, at the middle of the round trip.",
    ),
)
INFO_COUNTERS = (
    ("evicted_keys", "tiercache_partition_evicted_keys", "Keys evicted by the server."),
    ("expired_keys", "tiercache_partition_expired_keys", "Keys expired on the server."),
    (
        "failovers_seen",
        "tiercache_partition_failovers_seen",
        "Times a Sentinel partition's data was found on a new primary (counted in Redis).",
    ),
)
# The servers behind the partitions: a cluster's nodes, a Sentinel primary and its replicas.
SERVER_GAUGES = (
    ("slots", "tiercache_server_slots", "Hash slots a cluster master serves."),
    ("keys", "tiercache_server_keys", "Keys in the server's database (all of them)."),
    ("used_memory", "tiercache_server_memory_used_bytes", "Memory the server uses."),
    ("connected_clients", "tiercache_server_connected_clients", "Clients connected."),
    ("ops_per_second", "tiercache_server_ops_per_second", "The server's operations/s."),
    (
        "lag_s",
        "tiercache_server_replication_lag_seconds",
        "A replica's lag, as its primary sees it.",
    ),
)


class StatsCollector:
    """Yields every TierCache alias's figures when the registry is collected."""

    def collect(self) -> Iterator[Any]:
        scrapes = [scrape(alias) for alias in tiercache_aliases()]
        fleet = [(s.alias, s.figures) for s in scrapes]
        yield from _counts(fleet, "tiercache_")
        yield from _latency(fleet, "tiercache_")
        own = [(s.alias, s.own) for s in scrapes if s.own is not None]
        if own:
            yield from _counts(own, "tiercache_process_")
            yield from _latency(own, "tiercache_process_")
        yield _shared_up(scrapes)
        yield from _partitions(scrapes)
        yield from _servers(scrapes)
        yield from _write_behind()


WRITE_BEHIND_GAUGES = (
    ("pending", "Rows with a write not yet in the database."),
    ("oldest_pending_age", "Seconds since the oldest pending write was queued."),
    ("in_flight", "Rows a drain holds right now."),
    ("retrying", "Pending rows that failed at least once."),
    ("dead_letters", "Rows that failed MAX_RETRIES times."),
    ("drain_rate", "Rows written per second over the last one to two minutes."),
)
WRITE_BEHIND_COUNTERS = (
    ("written", "Rows the drains wrote."),
    ("failed", "Failed row attempts."),
    ("queued", "write_behind.save/delete calls queued."),
    ("backpressure", "Writes refused by MAX_PENDING (saved directly instead)."),
)


def _write_behind() -> Iterator[Any]:
    found = actions_module.write_behind_report()
    if found is None:
        return
    yield GaugeMetricFamily(
        "tiercache_write_behind_up", "1 if the journal could be read.", value=int(found["up"])
    )
    if not found["up"]:
        return
    for name, help_ in WRITE_BEHIND_GAUGES:
        value = found[name]
        if value is not None:
            yield GaugeMetricFamily(f"tiercache_write_behind_{name}", help_, value=value)
    for name, help_ in WRITE_BEHIND_COUNTERS:
        yield CounterMetricFamily(f"tiercache_write_behind_{name}", help_, value=found[name])


def _shared_up(scrapes: list[Scrape]) -> Any:
    up = GaugeMetricFamily(
        "tiercache_shared_figures_up",
        "1 if the figures summed over every process could be read from Redis.",
        labels=["cache"],
    )
    for found in scrapes:
        if found.shared_up is not None:
            up.add_metric([found.alias], 1 if found.shared_up else 0)
    return up


def _counts(per_cache: list, prefix: str) -> Iterator[Any]:
    families = {
        kind: CounterMetricFamily(f"{prefix}{name}", help_, labels=["cache", "tier"])
        for kind, name, help_ in (
            ("hit", "hits", "Keys found."),
            ("miss", "misses", "Keys looked up and not found."),
            ("set", "sets", "Entries stored."),
            ("delete", "deletes", "Keys deleted."),
        )
    }
    invalidations = CounterMetricFamily(
        f"{prefix}invalidations", "Tags invalidated, by tag prefix.", labels=["cache", "prefix"]
    )
    errors = CounterMetricFamily(
        f"{prefix}errors", "Failed partition calls.", labels=["cache", "partition", "operation"]
    )
    events = CounterMetricFamily(
        f"{prefix}events",
        "Tampered, undecodable entries...",
        labels=["cache", "partition", "event"],
    )
    trips = CounterMetricFamily(
        f"{prefix}breaker_trips", "Circuit breaker openings.", labels=["cache", "partition"]
    )
    samples = CounterMetricFamily(
        f"{prefix}consistency_samples",
        "Sampled hits checked against the database, by result (ok or stale).",
        labels=["cache", "result"],
    )
    for alias, figures in per_cache:
        for (kind, tier), value in figures.counts.items():
            families[kind].add_metric([alias, tier], value)
        for prefix, value in figures.invalidations.items():
            invalidations.add_metric([alias, prefix], value)
        for (operation, partition), value in figures.errors.items():
            errors.add_metric([alias, partition, operation], value)
        for (event, partition), value in figures.events.items():
            events.add_metric([alias, partition, event], value)
        for partition, value in figures.trips.items():
            trips.add_metric([alias, partition], value)
        for result, value in figures.consistency.items():
            samples.add_metric([alias, result], value)
    yield from (*families.values(), invalidations, errors, events, trips, samples)


def _latency(per_cache: list, prefix: str) -> Iterator[Any]:
    family = HistogramMetricFamily(
        f"{prefix}operation_duration_seconds",
        "Time of one call to a partition, by store operation.",
        labels=["cache", "partition", "operation"],
    )
    for alias, figures in per_cache:
        for (operation, partition), buckets in sorted(figures.latency.items()):
            cumulative = [
                (
                    repr(bound / 1e6),
                    sum(n for i, n in buckets.items() if bucket_bounds(i)[1] <= bound),
                )
                for bound in BOUNDS_US
            ]
            cumulative.append(("+Inf", sum(buckets.values())))
            seconds = figures.latency_ns[(operation, partition)] / 1e9
            family.add_metric([alias, partition, operation], cumulative, seconds)
    yield family


def _partitions(scrapes: list[Scrape]) -> Iterator[Any]:
    labels = ["cache", "partition"]
    families: dict[str, Any] = {
        k: GaugeMetricFamily(n, h, labels=labels) for k, n, h in INFO_GAUGES
    }
    families.update((k, CounterMetricFamily(n, h, labels=labels)) for k, n, h in INFO_COUNTERS)
    up = GaugeMetricFamily("tiercache_partition_up", "1 if the partition answered.", labels=labels)
    config = InfoMetricFamily(
        "tiercache_partition_config",
        "The server's eviction policy and persistence (rdb: CONFIG GET save, or unknown).",
        labels=labels,
    )
    server = InfoMetricFamily(
        "tiercache_partition_server",
        "Where a Sentinel or Redis Cluster partition lives now: role, address, hash slot.",
        labels=labels,
    )
    for found in scrapes:
        for info in found.partitions:
            names = [found.alias, info["name"]]
            up.add_metric(names, 1 if info.get("reachable") else 0)
            if info.get("role"):
                where = {k: str(info.get(k, "")) for k in ("role", "address", "slot")}
                server.add_metric(names, where)
            for name, family in families.items():
                if info.get(name) is not None:
                    family.add_metric(names, info[name])
            if info.get("kind") == "redis" and info.get("reachable"):
                config.add_metric(names, _config_labels(info))
    yield from (up, *families.values(), config)
    if server.samples:
        yield server


def _servers(scrapes: list[Scrape]) -> Iterator[Any]:
    labels = ["cache", "server"]
    families = {k: GaugeMetricFamily(n, h, labels=labels) for k, n, h in SERVER_GAUGES}
    up = GaugeMetricFamily(
        "tiercache_server_up",
        "1 if the server answered (replicas of a Sentinel primary are not asked).",
        labels=labels,
    )
    about = InfoMetricFamily(
        "tiercache_server",
        "A server's role, its primary (replicas), cluster flags, link and slot groups.",
        labels=labels,
    )
    for found in scrapes:
        for node in found.nodes:
            names = [found.alias, node["address"]]
            about.add_metric(names, _server_labels(node))
            if node.get("reachable") is not None:
                up.add_metric(names, 1 if node["reachable"] else 0)
            for name, family in families.items():
                if node.get(name) is not None:
                    family.add_metric(names, node[name])
    for metric in (up, about, *families.values()):
        if metric.samples:
            yield metric


def _server_labels(node: dict[str, Any]) -> dict[str, str]:
    return {
        "role": node["role"],
        "primary": node.get("primary") or "",
        "flags": ",".join(node.get("flags") or ()),
        "link": node.get("link") or "",
        "groups": ",".join(map(str, node.get("groups") or ())),
    }


def _config_labels(info: dict[str, Any]) -> dict[str, str]:
    persistence = info["persistence"]
    aof = persistence["aof"]
    return {
        "maxmemory_policy": info.get("maxmemory_policy") or "",
        "rdb": "unknown" if persistence["rdb"] is None else persistence["rdb"],
        "aof": "unknown" if aof is None else ("on" if aof else "off"),
    }


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refused = refuse_scrape(request)
    if refused is not None:
        return refused
    if unavailable is not None:
        return HttpResponse(MISSING, status=503, content_type="text/plain; charset=utf-8")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
