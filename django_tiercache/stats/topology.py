"""The servers behind a cache's partitions: a Redis Cluster's nodes, a Sentinel primary's replicas.

A cluster cache's partitions are slot groups, several to a master. Its servers
are the nodes ``CLUSTER NODES`` names (asked of one node that answers): masters
and replicas, with the slots each master serves and the slot groups in them, and
each node's INFO. A master's probe is the one its groups were described with
(partitions.describe_all), so a report probes every node once however many
groups there are; a node the cluster marks failed is not probed at all.

A Sentinel partition's servers are its primary, as its partition row describes
it, and the replicas the primary's INFO lists (address, state, lag; they are not
probed). The row carries "failovers seen": how often the cache's namespace found
itself on a new primary, which the greeting (``hello``, stores/lua.py) counts in
the meta hash when it finds another server's run_id there. The count lives with
the data it is about, on the primary, so every process reads the same figure and
it survives their restarts; it replicates with the hash and is lost only with it.
"""

from __future__ import annotations

from typing import Any

from ..storage.options import CLUSTER_SCHEME, SENTINEL_SCHEME
from .partitions import failure, probe_once, server_figures

SLOTS = 16384
# CLUSTER NODES flags shown on the page; "myself", "master" and "slave" are the role.
SHOWN_FLAGS = ("fail", "fail?", "handshake", "noaddr", "nofailover")


def servers(
    partitions: list[Any], infos: list[dict[str, Any]], probes: dict[tuple, Any]
) -> dict[str, Any]:
    """``{"nodes": [...]}`` for a report, with ``nodes_error`` when the cluster would not say."""
    if partitions and _scheme(partitions[0]) == CLUSTER_SCHEME:
        return _cluster(partitions, probes)
    rows = []
    for partition, info in zip(partitions, infos, strict=True):
        if _scheme(partition) == SENTINEL_SCHEME:
            rows += _sentinel_rows(info)
    return {"nodes": rows}


def _scheme(partition: Any) -> str:
    return partition.url.partition("://")[0].lower()


# -- Redis Cluster --


def _cluster(partitions: list[Any], probes: dict[tuple, Any]) -> dict[str, Any]:
    store = partitions[0].store
    try:
        table = parse_cluster_nodes(_ask_cluster_nodes(store, probes))
    except Exception as exc:  # noqa: BLE001 - the page says so and shows the rest
        return {"nodes": [], "nodes_error": failure(exc)}
    by_id = {node["id"]: node for node in table}
    slots = [partition.store.slot for partition in partitions]
    rows = []
    for node in sorted(table, key=_node_order(by_id)):
        master = by_id.get(node["master_id"]) if node["role"] == "replica" else node
        groups = [i for i, slot in enumerate(slots) if master and _serves(master, slot)]
        row = {
            "address": node["address"],
            "role": node["role"],
            "flags": node["flags"],
            "link": node["link"],
            "primary": master["address"] if master and master is not node else None,
            "slots": sum(high - low + 1 for low, high in node["ranges"]),
            "groups": groups,
        }
        rows.append({**row, **_node_figures(store, node, probes)})
    masters = [row for row in rows if row["role"] == "master"]
    summary = {
        "masters": len(masters),
        "replicas": len(rows) - len(masters),
        "slots": sum(row["slots"] for row in masters),
    }
    return {"nodes": rows, "nodes_summary": summary}


def _ask_cluster_nodes(store: Any, probes: dict[tuple, Any]) -> str:
    """CLUSTER NODES from the first node that answers, masters already probed first."""
    probed = [address for (address, _), probe in probes.items() if isinstance(probe, dict)]
    rest = [a for a in store.node_addresses() if a not in probed]
    error: Exception = ConnectionError("no node of the cluster is known")
    for address in [*probed, *rest]:
        try:
            reply = store.node_client(address).execute_command("CLUSTER", "NODES")
        except Exception as exc:  # noqa: BLE001 - ask the next node
            error = exc
            continue
        return reply.decode() if isinstance(reply, bytes) else str(reply)
    raise error


def parse_cluster_nodes(text: str) -> list[dict[str, Any]]:
    """The lines of CLUSTER NODES: id, address, role, flags, master id, link, slot ranges."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        nodes.append(
            {
                "id": fields[0],
                # ip:port@cport[,hostname]: the client port is what the slot map names
                "address": fields[1].partition("@")[0],
                "role": "replica" if "slave" in flags else "master",
                "flags": [flag for flag in flags if flag in SHOWN_FLAGS],
                "master_id": fields[3],
                "link": fields[7],
                "ranges": [_range(slots) for slots in fields[8:] if not slots.startswith("[")],
            }
        )
    return nodes


def _range(slots: str) -> tuple[int, int]:
    low, _, high = slots.partition("-")
    return int(low), int(high or low)


def _serves(node: dict[str, Any], slot: int) -> bool:
    return any(low <= slot <= high for low, high in node["ranges"])


def _node_order(by_id: dict[str, dict[str, Any]]) -> Any:
    """Each master by its first slot, followed by its replicas."""

    def first_slot(node: dict[str, Any] | None) -> int:
        ranges = node["ranges"] if node else []
        return min((low for low, _ in ranges), default=SLOTS)

    def order(node: dict[str, Any]) -> tuple:
        if node["role"] == "replica":
            master = by_id.get(node["master_id"])
            return (first_slot(master), master["address"] if master else "", 1, node["address"])
        return (first_slot(node), node["address"], 0, "")

    return order


def _node_figures(store: Any, node: dict[str, Any], probes: dict[tuple, Any]) -> dict[str, Any]:
    if "fail" in node["flags"] or "noaddr" in node["flags"]:
        return {"reachable": False, "error": "marked failed by the cluster"}
    try:
        probe = probe_once(store.node_client(node["address"]), node["address"], None, probes)
    except Exception as exc:  # noqa: BLE001 - an unreachable node is a row on the page
        return {"reachable": False, "error": failure(exc)}
    figures = server_figures(probe, 0)
    # The cluster's own view (above) names a replica's master; its INFO gives the link.
    figures.pop("primary", None)
    if node["role"] == "replica":
        figures["replication"] = figures.get("primary_link")
        figures["lag_s"] = figures.get("primary_last_io_s")
    return figures


# -- Sentinel --


# What a partition's row says of itself, not of the server it is on.
_PARTITION_ONLY = ("name", "note", "kind", "breaker_open", "breaker")


def _sentinel_rows(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The primary a Sentinel partition is on now, then its replicas (from its INFO)."""
    if not info.get("reachable"):
        return []  # the partition's row says why; the sentinels' answer is unknown
    primary = {
        **{k: v for k, v in info.items() if k not in _PARTITION_ONLY},
        "role": "primary",
        "partition": info["name"],
    }
    replicas = [
        {
            "address": replica["address"],
            "role": "replica",
            "primary": info["address"],
            "replication": replica["state"],
            "lag_s": replica["lag_s"],
            "bytes_behind": replica["bytes_behind"],
            "keys": None,  # not probed: what its primary says of it
            "reachable": None,
        }
        for replica in info.get("replicas", [])
    ]
    return [primary, *replicas]
