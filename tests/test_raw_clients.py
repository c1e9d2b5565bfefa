"""cache.client (raw_clients.py): django-redis' raw clients, with read replicas.

OPTIONS["READ_REPLICAS"] gives the partitions replicas that only
``cache.client.get_client(write=False)`` reads from, as django-redis reads
from ``LOCATION[1:]``; the cache's own commands stay on the primaries. A real
primary and a real replica (redis-server --replicaof), started for the module.
"""

from __future__ import annotations

import pytest
import redis

from django_tiercache.storage.options import parse
from tests import redis_servers as servers_module
from tests.redis_servers import RedisServer, ReplicaServer, free_port, start_on_a_free_port


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """(primary, replica): two redis-servers, the second replicating the first."""
    directory = tmp_path_factory.mktemp("replicated")
    primary = RedisServer(free_port(), directory / "primary")
    start_on_a_free_port(primary)
    replica = ReplicaServer(free_port(), directory / "replica", primary)
    start_on_a_free_port(replica)
    yield primary, replica
    servers_module.stop_servers([replica, primary])


@pytest.fixture
def clean_replicated(replicated):
    primary, replica = replicated
    servers_module.resume_all()
    primary.flush()
    _wait_for_replica(primary)
    return primary, replica


def _wait_for_replica(primary: RedisServer) -> None:
    with primary.client() as client:
        client.set("replicated", 1)
        assert client.wait(1, 5000) == 1, "the replica did not catch up"


def test_get_client__reads_on_the_replica_and_writes_on_the_primary(clean_replicated, make_cache):
    primary, replica = clean_replicated
    cache = make_cache(primary.url, READ_REPLICAS=[replica.url])
    writer = cache.client.get_client(write=True)
    reader, index = cache.client.get_client_with_index(write=False)
    assert index == 1
    assert writer.info("server")["tcp_port"] == primary.port
    assert reader.info("server")["tcp_port"] == replica.port
    writer.set("raw", "written")
    _wait_for_replica(primary)
    assert reader.get("raw") == b"written"
    assert cache.client._server == [primary.url, replica.url]


def test_get_client__without_replicas_reads_on_the_primary(clean_replicated, make_cache):
    primary, _ = clean_replicated
    cache = make_cache(primary.url)
    assert cache.client.get_client_with_index(write=False) == (cache.client.get_client(), 0)
    assert cache.client._server == [primary.url]


def test_the_cache_itself__reads_the_primary_while_the_replica_is_frozen(
    clean_replicated, make_cache
):
    primary, replica = clean_replicated
    cache = make_cache(primary.url, READ_REPLICAS=[replica.url], RAISE_ERRORS=True)
    cache.set("product", "old", tags=["shop.product"])
    cache.sadd("colours", "red")
    servers_module.cut_off_replica(primary, replica)  # it keeps "old", and stops answering
    cache.invalidate_tags("shop.product")
    assert cache.get("product") is None
    cache.set("product", "new", tags=["shop.product"])
    cache.sadd("colours", "blue")
    assert cache.get("product") == "new"
    assert cache.smembers("colours") == {"red", "blue"}
    frozen = cache.client.get_client(write=False)
    with pytest.raises(redis.TimeoutError):
        frozen.get(cache.make_key("product"))


def test_get_client__over_partitions_routes_reads_to_each_partitions_replica(
    clean_replicated, clean_redis_servers, make_cache
):
    primary, replica = clean_replicated
    other = clean_redis_servers[0]
    cache = make_cache([primary.url, other.url], READ_REPLICAS={primary.url: [replica.url]})
    on_primary = next(k for k in map(str, range(100)) if cache.partition_for(k) == primary.url)
    on_other = next(k for k in map(str, range(100)) if cache.partition_for(k) == other.url)
    cache.client.get_client().set(cache.make_key(on_primary), "p")
    cache.client.get_client().set(cache.make_key(on_other), "o")
    _wait_for_replica(primary)
    router, index = cache.client.get_client_with_index(write=False)
    assert index == 1
    assert router.get(cache.make_key(on_other)) == b"o"  # no replica: its primary
    replica.pause()
    with pytest.raises(redis.TimeoutError):
        router.get(cache.make_key(on_primary))
    with pytest.raises(redis.TimeoutError):
        cache.client.get_client(write=False, key=cache.make_key(on_primary)).get("x")
    assert (
        cache.client.get_client(key=cache.make_key(on_primary)).get(cache.make_key(on_primary))
        == b"p"
    )


def test_get_next_client_index__writes_first_reads_an_untried_replica(clean_replicated, make_cache):
    primary, replica = clean_replicated
    cache = make_cache(primary.url, READ_REPLICAS=[replica.url, f"{replica.url[:-1]}1"])
    client = cache.client
    assert client.get_next_client_index(write=True, tried=[0]) == 0
    assert {client.get_next_client_index(write=False) for _ in range(50)} == {1, 2}
    assert client.get_next_client_index(write=False, tried=[1, 2]) == 0
    assert client.get_next_client_index(write=False, tried=[0, 1]) == 2


@pytest.mark.parametrize(
    ("location", "replicas", "message"),
    [
        (["redis://a:1/0", "redis://b:1/0"], ["redis://r:1/0"], "one-partition LOCATION"),
        ("redis://a:1/0", {"redis://x:1/0": ["redis://r:1/0"]}, "is not a partition"),
        ("memory://x", ["redis://r:1/0"], "not a plain Redis server"),
        ("redis+sentinel://h:26379/s", ["redis://r:1/0"], "not a plain Redis server"),
        ("redis+cluster://h:7000/", ["redis://r:1/0"], "redis+cluster://"),
        ("redis://a:1/0", ["http://r"], "is not a redis://"),
        ("redis://a:1/0", [], "non-empty list"),
        ("redis://a:1/0", ["redis://a:1/0"], "the partition itself"),
    ],
)
def test_read_replicas__bad_values_are_errors_with_a_hint(location, replicas, message):
    # W012 (two partitions, no witness) is beside the point here.
    problems = [p for p in parse(location, {"READ_REPLICAS": replicas}).problems if p.id != "W012"]
    assert [p.id for p in problems] == ["E003"]
    assert message in problems[0].msg and "READ_REPLICAS" in problems[0].hint


def test_read_replicas__named_by_partition_name_and_valkey_urls_read_as_redis():
    config = parse(
        ["redis://a:1/0", "redis://b:1/0"],
        {"PARTITION_NAMES": ["a", "b"], "READ_REPLICAS": {"b": ["valkey://r:1/0"]}},
    )
    assert [p.id for p in config.problems] == ["W012"]  # two partitions, no witness
    assert config["READ_REPLICAS"] == {"b": ["redis://r:1/0"]}


def test_replica_clients__are_kept_and_close_connection_closes_their_idle_connections(
    clean_replicated, make_cache
):
    primary, replica = clean_replicated
    cache = make_cache(primary.url, READ_REPLICAS=[replica.url], CLOSE_CONNECTION=True)
    made = cache.make_key("k")
    reader = cache.client.get_client(write=False, key=made)
    assert cache.client.get_client(write=False, key=made) is reader
    reader.get(made)
    with replica.client() as probe:
        before = int(probe.info("clients")["connected_clients"])
        cache.close()
        assert int(probe.info("clients")["connected_clients"]) == before - 1
