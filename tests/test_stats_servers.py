"""The servers behind the partitions on the page, its JSON and Prometheus: a Redis Cluster's
nodes (role, slots, slot groups) and a Sentinel primary (its replicas, failovers seen).

Real servers: a cluster of three masters with a replica each, a primary with its
replica and three sentinels (conftest.py); failovers are real ones.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import redis
from django.core.cache import caches
from django.urls import include, path

from django_tiercache.stats import recent
from tests.redis_servers import SENTINEL_SERVICE, SHARED_REDIS_URL, crash

PAGE = "/admin/django_tiercache/stats/"
JSON = "/admin/django_tiercache/stats.json"
METRICS = "/tiercache/metrics/"
TIERCACHE = "django_tiercache.backend.TierCache"
FAST = {"SOCKET_TIMEOUT": 0.5, "SOCKET_CONNECT_TIMEOUT": 0.5, "BREAKER_COOLDOWN": 0.3}
HANDSHAKE = {"client|setinfo", "hello", "auth", "select"}
# What a publication of the counts sends (stats/publishing.py: a script, loaded once,
# and the commands it runs), and what a replica sends its master every second: no probe.
PUBLICATION = (
    "evalsha",
    "eval",
    "script|load",
    "hget",
    "hincrby",
    "hset",
    "expire",
    "multi",
    "exec",
    "pexpireat",
    "replconf",
)

urlpatterns = [
    path("", include("tests.urls")),
    path("tiercache/", include("django_tiercache.urls")),
]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def use_cache(settings, location: str, stats: bool = True, **options) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": TIERCACHE,
            "LOCATION": location,
            "KEY_PREFIX": f"servers-{uuid.uuid4().hex[:8]}",
            "OPTIONS": {**FAST, **options},
        }
    }
    settings.TIERCACHE = {"STATS_METRICS_PUBLIC": True, "STATS": stats}


def report_of(client) -> dict:
    recent.forget()
    (report,) = client.get(JSON).json()["caches"]
    return report


def samples(client) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    recent.forget()
    response = client.get(METRICS)
    assert response.status_code == 200
    text = response.content.decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def server_rows(page: str) -> dict[str, str]:
    """The Servers table's rows by address, as HTML."""
    rows = page.split('<tr class="tc-server"')[1:]
    return {row.split('data-server="')[1].split('"')[0]: row.split("</tr>")[0] for row in rows}


def eventually(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s"
        time.sleep(0.05)


# -- Redis Cluster --


@pytest.fixture
def cluster_cache(settings, clean_redis_cluster, request):
    # Without statistics, nothing but the test writes keys (the published figures would).
    use_cache(settings, clean_redis_cluster.url(), stats=getattr(request, "param", False))
    cache = caches["default"]
    cache.set_many({f"k{n}": n for n in range(40)})
    return cache


def test_cluster__every_node_with_its_role_slots_and_slot_groups(
    client, admin_user, clean_redis_cluster, cluster_cache
):
    cluster = clean_redis_cluster
    eventually(lambda: replicas_caught_up(cluster), "the replicas receiving the writes")
    client.force_login(admin_user)
    report = report_of(client)
    nodes = {row["address"]: row for row in report["nodes"]}
    masters = {f"127.0.0.1:{m.port}" for m in cluster.masters()}
    assert set(nodes) == {f"127.0.0.1:{n.port}" for n in cluster.nodes}
    assert {a for a, row in nodes.items() if row["role"] == "master"} == masters
    assert sum(row["slots"] for row in nodes.values()) == 16384
    assert report["nodes_summary"] == {"masters": 3, "replicas": 3, "slots": 16384}
    for index, partition in enumerate(cluster_cache._partitions):
        serving = f"127.0.0.1:{cluster.node_serving(partition.store.slot).port}"
        assert index in nodes[serving]["groups"]
    for address, row in nodes.items():
        assert row["reachable"]
        with redis.Redis.from_url(f"redis://{address}/0") as server:
            assert row["keys"] == server.dbsize()  # each node's own figures, replicas too
        if row["role"] == "replica":
            assert row["primary"] in masters and row["slots"] == 0
            assert row["groups"] == nodes[row["primary"]]["groups"]
            assert row["replication"] == "up"
    # Each master counted once in the servers' totals, however many groups it holds.
    assert report["servers"]["keys"] == sum(nodes[a]["keys"] for a in masters)

    page = client.get(PAGE).content.decode()
    rows = server_rows(page)
    assert set(rows) == set(nodes)
    for address in masters:
        assert 'data-role="master"' in rows[address]
        assert f'data-figure="slots">{nodes[address]["slots"]:,}<' in rows[address]
    assert 'data-figure="slots-served">16,384<' in page

    found = samples(client)
    slots = {s.labels["server"]: s.value for s in found if s.name == "tiercache_server_slots"}
    assert sum(slots.values()) == 16384 and set(slots) == set(nodes)
    roles = {
        s.labels["server"]: s.labels["role"] for s in found if s.name == "tiercache_server_info"
    }
    assert roles == {address: row["role"] for address, row in nodes.items()}


def replicas_caught_up(cluster) -> bool:
    """Every replica holds as many keys as its master (replication is asynchronous)."""
    sizes, masters = {}, {}
    for node in cluster.nodes:
        with node.client() as server:
            sizes[node.port] = server.dbsize()
            info = server.info("replication")
        if info["role"] == "slave":
            masters[node.port] = info["master_port"]
    return all(sizes[replica] == sizes[master] for replica, master in masters.items())


@pytest.mark.parametrize("cluster_cache", [True], indirect=True)
def test_cluster_scrape__probes_each_node_once_whatever_the_number_of_slot_groups(
    client, clean_redis_cluster, cluster_cache, settings
):
    """8 slot groups on 3 masters: each node gets one probe, one node is asked CLUSTER NODES."""
    cluster = clean_redis_cluster
    # The scrape also reads write-behind's figures from its journal, which would be on
    # this cluster (the default cache's); counted here are the probes of the nodes.
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "WRITE_BEHIND": {"REDIS_URL": SHARED_REDIS_URL, "KEY_PREFIX": f"wb{uuid.uuid4().hex[:8]}"},
    }
    samples(client)  # the clients of every node are made, and connected
    recent.forget()

    def commandstats():
        stats = []
        for node in cluster.nodes:
            with node.client() as server:
                stats.append(server.info("commandstats"))
        return stats

    before = commandstats()
    client.get(METRICS)
    after = commandstats()
    ran, asked_nodes = Counter(), 0
    for old, new in zip(before, after, strict=True):
        node = Counter()
        for name, stats in new.items():
            command = name.removeprefix("cmdstat_")
            calls = stats["calls"] - old.get(name, {}).get("calls", 0)
            if calls and command not in HANDSHAKE:
                node[command] = calls
        node["info"] -= 1  # the INFO commandstats of `after`
        # A publication of this process's counts (a transaction of HINCRBYs) may
        # land meanwhile; it is no probe of the scrape's.
        for command in PUBLICATION:
            node.pop(command, None)
        asked_nodes += node.pop("cluster|nodes", 0)
        assert +node in (
            Counter(time=1, info=1, **{"config|get": 1}),
            Counter(time=1, info=1, hgetall=1, **{"config|get": 1}),
        )
        ran.update(node)
    assert asked_nodes == 1
    assert ran == Counter(time=6, info=6, hgetall=1, **{"config|get": 6})


def test_cluster_master_failed_over__its_replica_shows_as_master_and_the_page_answers(
    client, admin_user, settings, fresh_redis_cluster
):
    cluster = fresh_redis_cluster
    use_cache(settings, cluster.url())
    cache = caches["default"]
    cache.set("k", 1)
    client.force_login(admin_user)
    before = {row["address"]: row for row in report_of(client)["nodes"]}
    master = cluster.masters()[0]
    old = f"127.0.0.1:{master.port}"
    replica = next(a for a, row in before.items() if row.get("primary") == old)

    crash(master)
    port = int(replica.rpartition(":")[2])
    promoted = next(n for n in cluster.nodes if n.port == port)
    cluster.wait_until(lambda: cluster.role_of(promoted) == "master", "replica promoted")

    def settled():
        nodes = {row["address"]: row for row in report_of(client)["nodes"]}
        return nodes[replica]["role"] == "master" and "fail" in nodes[old]["flags"]

    eventually(settled, "the cluster's view of the failover")
    nodes = {row["address"]: row for row in report_of(client)["nodes"]}
    assert nodes[replica]["slots"] == before[old]["slots"]
    assert nodes[replica]["groups"] == before[old]["groups"]
    assert nodes[old]["reachable"] is False
    assert sum(row["slots"] for row in nodes.values()) == 16384

    response = client.get(PAGE)
    assert response.status_code == 200
    rows = server_rows(response.content.decode())
    assert 'data-role="master"' in rows[replica]
    assert ">fail<" in rows[old] and "unreachable" in rows[old]

    found = samples(client)
    roles = {
        s.labels["server"]: s.labels["role"] for s in found if s.name == "tiercache_server_info"
    }
    assert roles[replica] == "master"
    up = {s.labels["server"]: s.value for s in found if s.name == "tiercache_server_up"}
    assert up[old] == 0 and up[replica] == 1


# -- Sentinel --


def primary_row(report: dict) -> dict:
    (row,) = [row for row in report["nodes"] if row["role"] == "primary"]
    return row


def failovers_metric(client) -> float:
    (value,) = [
        s.value
        for s in samples(client)
        if s.name == "tiercache_partition_failovers_seen_total" and s.labels["cache"] == "default"
    ]
    return value


def test_sentinel_failover__failovers_seen_goes_to_one_on_the_page_and_in_prometheus(
    client, admin_user, settings, sentinel_set
):
    use_cache(settings, sentinel_set.url())
    cache = caches["default"]
    cache.set("k", "v", tags=["t"])
    primary, replica = sentinel_set.primary, sentinel_set.replica
    client.force_login(admin_user)

    report = report_of(client)
    row = primary_row(report)
    assert row["address"] == f"127.0.0.1:{primary.port}"
    assert row["failovers_seen"] == 0 and report["partitions"][0]["failovers_seen"] == 0
    (copy,) = [r for r in report["nodes"] if r["role"] == "replica"]
    assert (copy["address"], copy["primary"]) == (f"127.0.0.1:{replica.port}", row["address"])
    assert failovers_metric(client) == 0

    with primary.client() as server:
        assert server.wait(1, 2000) == 1  # the replica has the meta hash
    with sentinel_set.sentinels[0].client() as sentinel:
        sentinel.sentinel_failover(SENTINEL_SERVICE)
    sentinel_set.wait_for_failover(primary.port)

    def counted() -> bool:
        # The first call on the new primary counts the failover; the sentinels that did
        # not run it name the new primary a moment later.
        # The old primary is listed once it has rejoined as the new one's replica.
        cache.set("after", 1)
        report = report_of(client)
        if not report["nodes"]:
            # A call that timed out on the old primary mid-failover opened the
            # partition's breaker: the page says it is down until the cooldown.
            return False
        row = primary_row(report)
        rejoined = [r["address"] for r in report["nodes"] if r["role"] == "replica"]
        return (row["address"], row["failovers_seen"], rejoined) == (
            f"127.0.0.1:{replica.port}",
            1,
            [f"127.0.0.1:{primary.port}"],
        )

    eventually(counted, "the failover seen on the new primary")
    with replica.client() as server:  # kept with the data, where every process reads it
        assert server.hget(cache._partitions[0].store.meta_key(), "switches") == b"1"

    response = client.get(PAGE)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-figure="failovers-seen">1<' in page
    rows = server_rows(page)
    assert 'data-role="primary"' in rows[f"127.0.0.1:{replica.port}"]
    # The old primary, now its replica, is listed, not probed: no figure of its own.
    assert 'data-role="replica"' in rows[f"127.0.0.1:{primary.port}"]
    assert "dict_keys" not in rows[f"127.0.0.1:{primary.port}"]
    assert failovers_metric(client) == 1


def test_sentinel_servers__what_redis_reports_is_escaped_on_the_page(
    client, admin_user, settings, sentinel_set
):
    """A replica announces itself with any string it is given: the page shows it as text."""
    use_cache(settings, sentinel_set.url())
    caches["default"].set("k", 1)
    evil = "<i>x</i>"
    with sentinel_set.replica.client() as server:
        server.config_set("replica-announce-ip", evil)
    with sentinel_set.primary.client() as server:
        server.client_kill_filter(_type="replica")  # it reconnects, announcing the new address

        def announced() -> bool:
            return server.info("replication").get("slave0", {}).get("ip") == evil

        eventually(announced, "the replica announcing itself anew")
    client.force_login(admin_user)
    recent.forget()
    page = client.get(PAGE).content.decode()
    assert "&lt;i&gt;x&lt;/i&gt;" in page
    assert evil not in page


# -- outages --


def test_a_cluster_that_does_not_answer__the_page_json_and_metrics_still_answer(
    client, admin_user, settings, closed_port_url
):
    port = closed_port_url.rpartition(":")[2].split("/")[0]
    use_cache(settings, f"redis+cluster://127.0.0.1:{port}/", CLUSTER_SLOT_GROUPS=2)
    client.force_login(admin_user)
    report = report_of(client)
    assert report["nodes"] == [] and "no seed node" in report["nodes_error"]
    response = client.get(PAGE)
    assert response.status_code == 200
    assert "The cluster did not say which nodes it has" in response.content.decode()
    up = [s.value for s in samples(client) if s.name == "tiercache_partition_up"]
    assert up == [0, 0]


def test_a_sentinel_partition_whose_servers_are_all_down__is_a_partition_down(
    client, admin_user, settings, sentinel_set
):
    use_cache(settings, sentinel_set.url())
    caches["default"].set("k", 1)
    sentinel_set.replica.stop()
    sentinel_set.primary.stop()
    client.force_login(admin_user)
    report = report_of(client)
    assert report["down"] == [report["partitions"][0]["name"]] and report["nodes"] == []
    response = client.get(PAGE)
    assert response.status_code == 200
    assert "Partitions down:" in response.content.decode()
    found = samples(client)
    assert [s.value for s in found if s.name == "tiercache_partition_up"] == [0]
    assert not [s for s in found if s.name == "tiercache_partition_failovers_seen_total"]
