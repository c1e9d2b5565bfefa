"""What each partition's server says about itself, and how evenly keys are spread.

Redis partitions answer TIME, then INFO and CONFIG GET save in one pipeline: keys
and expiring keys of the cache's database, memory used and its limit and
policy, persistence (RDB snapshots, AOF), evicted and expired keys, connected
clients, operations per second, and the server's clock against this host's.
CONFIG may be refused (managed services, ACLs): the RDB schedule is then
unknown and everything else still shown. For memory:// partitions only what
this process holds is known: the entries and the limit.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from redis.exceptions import ResponseError

from ..storage.options import SENTINEL_SCHEME
from .advice import eviction_warning, skew_warning
from .redaction import redact_text

# The fullest partition may hold this much more than the mean and still count as balanced.
BALANCED_MAX_OVER_MEAN = 1.25
# Below this many keys per partition, the spread says more about chance than routing.
MIN_KEYS_FOR_SPREAD = 100


def describe_all(partitions: list[Any]) -> tuple[list[dict[str, Any]], dict[tuple, Any]]:
    """Every partition described, each server probed once (a cluster's slot groups share
    their masters); with the probes by (address, meta key), which topology.py reuses."""
    probes: dict[tuple, Any] = {}
    return [describe(partition, probes) for partition in partitions], probes


def describe(partition: Any, probes: dict[tuple, Any] | None = None) -> dict[str, Any]:
    breaker = partition.breaker.state  # read once: both fields tell the same moment
    base = {
        "name": redact_text(partition.name),
        "kind": "memory" if partition.url.startswith("memory:") else "redis",
        "breaker_open": breaker == "open",
        "breaker": breaker,
    }
    store = partition.store
    # Not getattr(store, "client"): a cluster's client is made at first use, and raises
    # while the cluster is down.
    if base["kind"] == "memory":
        return {**base, **_memory(store)}
    if base["breaker_open"]:
        return {**base, "reachable": False, "error": "circuit breaker open in this process"}
    try:
        # A Sentinel primary or a cluster master: the server that holds it now.
        client, where = store.server_client(), store.placement()
        # A Sentinel partition also tells how many failovers its namespace has seen.
        meta = store.meta_key() if partition.url.startswith(f"{SENTINEL_SCHEME}:") else None
        probe = probe_once(client, where.get("address"), meta, {} if probes is None else probes)
    except Exception as exc:  # noqa: BLE001 - an unreachable server is a row on the page
        return {**base, "reachable": False, "error": failure(exc)}
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return {**base, **_placed(where), **server_figures(probe, db)}


def failure(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")


def probe_once(client: Any, address: str | None, meta: str | None, probes: dict) -> dict:
    """_probe(), once per server and report; a failure is remembered too (and raised)."""
    if address is None:
        return _probe(client, meta)
    key = (address, meta)
    if key not in probes:
        try:
            probes[key] = _probe(client, meta)
        except Exception as exc:  # noqa: BLE001 - raised again below, and for the next group
            probes[key] = exc
    found = probes[key]
    if isinstance(found, Exception):
        raise found
    return found


def _placed(where: dict[str, Any]) -> dict[str, Any]:
    """Role, address and slot of a Sentinel or cluster partition, and the page's note on it."""
    if not where:
        return {}
    slot = f", slot {where['slot']}" if where.get("slot") is not None else ""
    return {**where, "note": f"{where['role']} {where['address']}{slot}"}


def _probe(client: Any, meta: str | None = None) -> dict[str, Any]:
    """TIME alone (timed, to place it on our clock), then INFO and CONFIG GET save together
    (and the meta hash's ``switches``, when `meta` names it)."""
    sent = time.time()
    seconds, microseconds = client.time()
    received = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.info()
    pipe.config_get("save")
    if meta is not None:
        pipe.hget(meta, "switches")
    info, save, *switches = pipe.execute(raise_on_error=False)
    if isinstance(info, Exception):
        raise info
    return {
        "switches": _count(switches[0]) if switches else None,
        "info": info,
        # The server read its clock somewhere in the round trip; the midpoint is the best guess.
        "skew": seconds + microseconds / 1e6 - (sent + received) / 2,
        "round_trip": received - sent,
        "save": None if isinstance(save, ResponseError) else save.get("save", ""),
    }


def _count(value: Any) -> int | None:
    """A counter read from a hash: absent is 0, an error reply unknown."""
    return None if isinstance(value, Exception) else int(value or 0)


def server_figures(probe: dict[str, Any], db: int) -> dict[str, Any]:
    """What the page shows of one server: its INFO, configuration, clock and replication."""
    info = probe["info"]
    keyspace = info.get(f"db{db}") or {}
    policy = info.get("maxmemory_policy")
    skew = round(probe["skew"], 3)
    found = {
        "reachable": True,
        # Valkey answers redis_version 7.2.4 for compatibility; its own is valkey_version.
        "server": info.get("server_name") or "redis",
        "version": info.get("valkey_version") or info.get("redis_version"),
        "keys": int(keyspace.get("keys", 0)),
        "expiring_keys": int(keyspace.get("expires", 0)),
        "used_memory": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "maxmemory": info.get("maxmemory"),
        "maxmemory_policy": policy,
        "policy_warning": eviction_warning(policy),
        "persistence": _persistence(info, probe["save"]),
        "evicted_keys": info.get("evicted_keys"),
        "expired_keys": info.get("expired_keys"),
        "connected_clients": info.get("connected_clients"),
        "ops_per_second": info.get("instantaneous_ops_per_sec"),
        "clock_skew_s": skew,
        "clock_uncertainty_s": round(probe["round_trip"] / 2, 4),
        "clock_warning": skew_warning(skew),
        **replication(info),
    }
    if probe.get("switches") is not None:
        found["failovers_seen"] = probe["switches"]
    return found


def replication(info: dict[str, Any]) -> dict[str, Any]:
    """The server's role, and its replicas (a primary) or the link to its primary (a replica)."""
    if info.get("role") != "slave":
        offset = info.get("master_repl_offset")
        replicas = [
            _replica(info[f"slave{i}"], offset)
            for i in range(int(info.get("connected_slaves") or 0))
            if isinstance(info.get(f"slave{i}"), dict)
        ]
        return {"server_role": "primary", "replicas": replicas}
    return {
        "server_role": "replica",
        "primary": f"{info.get('master_host')}:{info.get('master_port')}",
        "primary_link": info.get("master_link_status"),
        "primary_last_io_s": info.get("master_last_io_seconds_ago"),
    }


def _replica(entry: dict[str, Any], offset: Any) -> dict[str, Any]:
    """One ``slaveN`` line of INFO replication: address, state, lag and bytes behind."""
    behind = None
    if isinstance(offset, int) and isinstance(entry.get("offset"), int):
        behind = max(0, offset - entry["offset"])
    return {
        "address": f"{entry.get('ip')}:{entry.get('port')}",
        "state": entry.get("state"),
        "lag_s": entry.get("lag"),
        "bytes_behind": behind,
    }


def _persistence(info: dict[str, Any], save: str | None) -> dict[str, Any]:
    """RDB snapshots (CONFIG GET save; None when CONFIG is refused) and AOF (INFO)."""
    aof = info.get("aof_enabled")
    return {
        "rdb": None if save is None else (save or "off"),
        "aof": None if aof is None else bool(int(aof)),
        "config_allowed": save is not None,
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
    """Keys, memory and evictions added over the reachable partitions' servers (each once:
    a cluster's slot groups share their masters)."""
    reachable, seen = [], set()
    for info in infos:
        address = info.get("address")
        if info.get("reachable") and (address is None or address not in seen):
            reachable.append(info)
            seen.add(address)

    def total(name: str) -> int | None:
        values = [info[name] for info in reachable if info.get(name) is not None]
        return sum(values) if values else None

    return {
        "keys": total("keys"),
        "used_memory": total("used_memory"),
        "evicted_keys": total("evicted_keys"),
        "expired_keys": total("expired_keys"),
        "unreachable": len([info for info in infos if not info.get("reachable")]),
    }
