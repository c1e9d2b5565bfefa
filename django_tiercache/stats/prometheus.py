"""The statistics in Prometheus' text format, for ``django_tiercache.urls``' metrics/ view.

The counts are those summed over every process (see publishing.py), so one
scrape of any one process gives the whole fleet: scrape a single target, or
aggregate with max() rather than sum(). Counters restart from zero when the
statistics are reset, which Prometheus' rate() takes in its stride.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImproperlyConfigured(
        "django_tiercache.urls (the Prometheus metrics/ view) needs prometheus_client: "
        "pip install 'django-tiercache[prometheus]'."
    ) from exc

from django.core.cache import caches

from . import partitions as partitions_module
from .aggregation import Figures, parse, snapshot_of
from .collection import EXACT_US, LAST_BUCKET, bucket_bounds, tiercache_aliases
from .conf import get_config

logger = logging.getLogger("django_tiercache")

# Histogram bounds: the powers of two from 8 µs, which are bucket edges, so no bucket is split.
BOUNDS_US = [bucket_bounds(i)[0] for i in range(EXACT_US, LAST_BUCKET + 1, 4)]

INFO_GAUGES = (
    ("keys", "tiercache_partition_keys", "Keys in the partition's database (all of them)."),
    ("used_memory", "tiercache_partition_memory_used_bytes", "Memory the server uses."),
    ("maxmemory", "tiercache_partition_memory_max_bytes", "The server's maxmemory (0: none)."),
    ("connected_clients", "tiercache_partition_connected_clients", "Clients connected."),
    ("ops_per_second", "tiercache_partition_ops_per_second", "The server's operations/s."),
)
INFO_COUNTERS = (
    ("evicted_keys", "tiercache_partition_evicted_keys", "Keys evicted by the server."),
    ("expired_keys", "tiercache_partition_expired_keys", "Keys expired on the server."),
)


class StatsCollector:
    """Yields every TierCache alias's figures when the registry is collected."""

    def collect(self) -> Iterator[Any]:
        per_cache = []
        for alias in tiercache_aliases():
            cache = caches[alias]
            try:
                snapshot = snapshot_of(cache)
            except Exception:  # noqa: BLE001 - the partitions' rows still say what is down
                logger.warning("statistics of cache %r unreadable", alias, exc_info=True)
                snapshot = None
            partitions = getattr(cache, "_partitions", [])
            infos = [partitions_module.describe(p) for p in partitions]
            per_cache.append((alias, parse(snapshot.totals) if snapshot else Figures(), infos))
        yield from _counts(per_cache)
        yield from _latency(per_cache)
        yield from _partitions(per_cache)


def _counts(per_cache: list) -> Iterator[Any]:
    families = {
        kind: CounterMetricFamily(f"tiercache_{name}", help_, labels=["cache", "tier"])
        for kind, name, help_ in (
            ("hit", "hits", "Keys found."),
            ("miss", "misses", "Keys looked up and not found."),
            ("set", "sets", "Entries stored."),
            ("delete", "deletes", "Keys deleted."),
        )
    }
    invalidations = CounterMetricFamily(
        "tiercache_invalidations", "Tags invalidated, by tag prefix.", labels=["cache", "prefix"]
    )
    errors = CounterMetricFamily(
        "tiercache_errors", "Failed partition calls.", labels=["cache", "partition", "operation"]
    )
    events = CounterMetricFamily(
        "tiercache_events",
        "Tampered, undecodable entries...",
        labels=["cache", "partition", "event"],
    )
    trips = CounterMetricFamily(
        "tiercache_breaker_trips", "Circuit breaker openings.", labels=["cache", "partition"]
    )
    for alias, figures, _ in per_cache:
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
    yield from (*families.values(), invalidations, errors, events, trips)


def _latency(per_cache: list) -> Iterator[Any]:
    family = HistogramMetricFamily(
        "tiercache_operation_duration_seconds",
        "Time of one call to a partition, by store operation.",
        labels=["cache", "partition", "operation"],
    )
    for alias, figures, _ in per_cache:
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


def _partitions(per_cache: list) -> Iterator[Any]:
    labels = ["cache", "partition"]
    families: dict[str, Any] = {
        k: GaugeMetricFamily(n, h, labels=labels) for k, n, h in INFO_GAUGES
    }
    families.update((k, CounterMetricFamily(n, h, labels=labels)) for k, n, h in INFO_COUNTERS)
    up = GaugeMetricFamily("tiercache_partition_up", "1 if the partition answered.", labels=labels)
    for alias, _, infos in per_cache:
        for info in infos:
            up.add_metric([alias, info["name"]], 1 if info.get("reachable") else 0)
            for name, family in families.items():
                if info.get(name) is not None:
                    family.add_metric([alias, info["name"]], info[name])
    yield from (up, *families.values())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = get_config()["STATS_METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return HttpResponse(
                "a bearer token is required\n", status=401, content_type="text/plain"
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
