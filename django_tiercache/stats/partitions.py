"""What each partition's server says about itself, and how evenly keys are spread.

Redis partitions answer INFO: keys and expiring keys of the cache's database,
memory used and its limit and policy, evicted and expired keys, connected
clients, operations per second. For memory:// partitions only what this
process holds is known: the entries and the limit.
"""

from __future__ import annotations

import statistics
from typing import Any

# The fullest partition may hold this much more than the mean and still count as balanced.
BALANCED_MAX_OVER_MEAN = 1.25
# Below this many keys per partition, the spread says more about chance than routing.
MIN_KEYS_FOR_SPREAD = 100


def describe(partition: Any) -> dict[str, Any]:
    base = {
        "name": partition.name,
        "kind": "memory" if partition.url.startswith("memory:") else "redis",
        "breaker_open": partition.breaker.is_open,
    }
    client = getattr(partition.store, "client", None)
    if client is None:
        return {**base, **_memory(partition.store)}
    if base["breaker_open"]:
        return {**base, "reachable": False, "error": "circuit breaker open in this process"}
    try:
        info = client.info()
    except Exception as exc:  # noqa: BLE001 - an unreachable server is a row on the page
        return {**base, "reachable": False, "error": f"{type(exc).__name__}: {exc}"}
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return {**base, **_redis(info, db)}


def _redis(info: dict[str, Any], db: int) -> dict[str, Any]:
    keyspace = info.get(f"db{db}") or {}
    return {
        "reachable": True,
        "version": info.get("redis_version"),
        "keys": int(keyspace.get("keys", 0)),
        "expiring_keys": int(keyspace.get("expires", 0)),
        "used_memory": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "maxmemory": info.get("maxmemory"),
        "maxmemory_policy": info.get("maxmemory_policy"),
        "evicted_keys": info.get("evicted_keys"),
        "expired_keys": info.get("expired_keys"),
        "connected_clients": info.get("connected_clients"),
        "ops_per_second": info.get("instantaneous_ops_per_sec"),
    }


def _memory(store: Any) -> dict[str, Any]:
    space = getattr(store, "space", None)
    if space is None:
        return {"reachable": True}
    return {
        "reachable": True,
        "keys": len(space.data),
        "max_entries": space.max_entries,
        "note": "this process only",
    }


def spread(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The key-count distribution over partitions: mean, standard deviation, max/mean."""
    counts = [info["keys"] for info in infos if info.get("keys") is not None]
    if len(counts) < 2 or len(counts) != len(infos):
        return {"partitions": len(counts), "balanced": None}
    mean = statistics.fmean(counts)
    stdev = statistics.pstdev(counts)
    max_over_mean = max(counts) / mean if mean else None
    balanced = None
    if mean >= MIN_KEYS_FOR_SPREAD and max_over_mean is not None:
        balanced = max_over_mean <= BALANCED_MAX_OVER_MEAN
    return {
        "partitions": len(counts),
        "mean": round(mean, 1),
        "stdev": round(stdev, 1),
        "cv": round(stdev / mean, 3) if mean else None,
        "max_over_mean": round(max_over_mean, 3) if max_over_mean else None,
        "balanced": balanced,
    }


def server_totals(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """Keys, memory and evictions added over the reachable partitions."""
    reachable = [info for info in infos if info.get("reachable")]

    def total(name: str) -> int | None:
        values = [info[name] for info in reachable if info.get(name) is not None]
        return sum(values) if values else None

    return {
        "keys": total("keys"),
        "used_memory": total("used_memory"),
        "evicted_keys": total("evicted_keys"),
        "expired_keys": total("expired_keys"),
        "unreachable": len(infos) - len(reachable),
    }
