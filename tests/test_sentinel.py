"""A partition on a Sentinel-managed primary: it follows failovers and serves nothing stale.

Each test starts its own primary, replica and three sentinels (conftest.sentinel_set).
"""

import asyncio
import json
import time

import pytest
import redis

from django_tiercache.stats.partitions import describe
from django_tiercache.storage import options as options_module
from django_tiercache.storage.options import SentinelLocation, parse_sentinel_url
from tests import stress
from tests.redis_servers import crash, cut_off_replica
from tests.test_checks import ids_for
from tests.testapp.models import Product

FAST = stress.FAST


def test_sentinel_url__names_sentinels_service_database_and_credentials():
    url = "redis+sentinel://u:p%40ss@s1:26379,s2:26380,s3/mymaster/2"
    assert parse_sentinel_url(url) == SentinelLocation(
        [("s1", 26379), ("s2", 26380), ("s3", 26379)], "mymaster", 2, "u", "p@ss"
    )
    assert parse_sentinel_url("redis+sentinel://s1:26379/mymaster").db == 0
    assert options_module.parse(url, {}).names == [
        "redis+sentinel://u:***@s1:26379,s2:26380,s3/mymaster/2"
    ]


def test_sentinel_url_in_a_comma_separated_location__keeps_its_sentinels_together():
    parsed = options_module.parse("redis+sentinel://s1:1,s2:2/m/0,redis://r:6379/0", {})
    assert parsed.urls == ["redis+sentinel://s1:1,s2:2/m/0", "redis://r:6379/0"]
    assert [p.id for p in parsed.problems] == ["W012"]  # two partitions, no witness


@pytest.mark.parametrize(
    "location",
    [
        "redis+sentinel://s1:26379/",  # no service
        "redis+sentinel://s1:26379,s2:port/mymaster/0",  # a bad port
        "redis+sentinel:///mymaster/0",  # no sentinel
        "redis+sentinel://s1:26379/mymaster/zero",  # a bad database
    ],
)
def test_bad_sentinel_urls__are_tiercache_e001(location):
    assert ids_for(location) == ["tiercache.E001"]


def _sync_get(cache, key):
    return cache.get(key)


def _async_get(cache, key):  # native: redis.asyncio's Sentinel client (stores/sentinel.py)
    return asyncio.run(cache.aget(key))


@pytest.mark.parametrize("get", [_sync_get, _async_get], ids=["sync", "async"])
def test_sentinels_that_all_fail__fail_the_call_at_once_without_retries(make_cache, get):
    """redis-py's default for the clients Sentinel makes is three retries with
    backoffs of up to 10 s: a read would sleep for seconds before failing. Each
    sentinel here accepts the connection and closes it at once."""
    import socket
    import threading

    listeners, accepted = [], []
    for _ in range(2):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.2)
        listeners.append(listener)
    done = threading.Event()

    def refuse(listener):
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(listener.getsockname()[1])
            conn.close()

    ports = [listener.getsockname()[1] for listener in listeners]
    threads = [threading.Thread(target=refuse, args=(lst,), daemon=True) for lst in listeners]
    for thread in threads:
        thread.start()
    try:
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
        cache = make_cache(f"redis+sentinel://{hosts}/nowhere/0", BREAKER_FAILURES=100)
        assert get(cache, "k") is None  # a miss, not an exception
        assert get(cache, "k") is None
    finally:
        done.set()
        for thread in threads:
            thread.join(5)
        for listener in listeners:
            listener.close()
    # Each read asked each sentinel once: no retry, so no backoff slept.
    assert sorted(accepted) == sorted(2 * ports)


def test_a_sentinel_partition__stores_and_invalidates_like_a_redis_one(sentinel_set, make_cache):
    cache = make_cache(sentinel_set.url(), **FAST)
    cache.set("product:1", "one", tags=["product"])
    cache.set("plain", "kept")
    assert cache.get_many(["product:1", "plain"]) == {"product:1": "one", "plain": "kept"}
    cache.invalidate_tags("product")
    assert cache.get("product:1") is None
    with sentinel_set.primary.client() as client:  # it really is on the primary
        assert client.dbsize() > 0
    where = describe(cache._partitions[0])
    assert where["reachable"] and where["note"] == (
        f"sentinel primary 127.0.0.1:{sentinel_set.primary.port}"
    )


def test_failover__an_invalidation_the_replica_missed_is_never_served(sentinel_set, make_cache):
    """The primary acknowledges an invalidation and dies before its replica has it.
    The promoted replica holds the old token and the old primary's meta hash: the
    greeting sees a new run_id and starts the hash over, so the entry is a miss."""
    cache = make_cache(sentinel_set.url(), **FAST)
    cache.set("product:1", "old", tags=["product"])
    cache.set("plain", "kept")
    primary, replica = sentinel_set.primary, sentinel_set.replica
    cut_off_replica(primary, replica)  # it has both entries, and misses what follows
    cache.invalidate_tags("product")
    assert cache.get("product:1") is None
    crash(primary)
    replica.resume()
    # While no primary is named, requests degrade as on a dead partition.
    assert cache.get("plain") in (None, "kept")
    sentinel_set.wait_for_failover(primary.port)
    with replica.client() as client:
        assert client.info("replication")["role"] == "master"
        assert _tagged_values(client)  # the stale entry is there, with its old token
    assert _eventually(lambda: cache.get("plain")) == "kept"
    assert cache.get("product:1") is None
    where = describe(cache._partitions[0])  # the statistics page follows it
    assert (where["role"], where["address"]) == ("sentinel primary", f"127.0.0.1:{replica.port}")
    with replica.client() as client:
        ns_meta = next(k for k in client.keys("*:_tc:meta"))
        assert client.hget(ns_meta, "run").decode() == client.info("server")["run_id"]


def test_failover__async_reads_follow_the_new_primary_and_serve_nothing_stale(
    sentinel_set, make_cache
):
    """As above, with the reads native on the event loop (their connections ask
    redis.asyncio's Sentinel client for the primary): connections made before
    the failover, kept by the loop's pool, never serve the stale entry."""
    cache = make_cache(sentinel_set.url(), **FAST)
    primary, replica = sentinel_set.primary, sentinel_set.replica

    async def scenario():
        await cache.aset("product:1", "old", tags=["product"])
        await cache.aset("plain", "kept")
        assert await cache.aget("product:1") == "old"  # a connection, kept for later
        cut_off_replica(primary, replica)
        await cache.ainvalidate_tags("product")
        assert await cache.aget("product:1") is None
        crash(primary)
        replica.resume()
        await asyncio.to_thread(sentinel_set.wait_for_failover, primary.port)
        deadline = time.monotonic() + 30
        while await cache.aget("plain") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return await cache.aget("plain"), await cache.aget("product:1")

    assert asyncio.run(scenario()) == ("kept", None)
    with replica.client() as client:
        assert client.info("replication")["role"] == "master"
        assert _tagged_values(client)  # the stale entry is there: it was never served


def _tagged_values(client: redis.Redis) -> list[bytes]:
    values = [client.get(k) for k in client.keys("*product:1*")]
    return [v for v in values if v and v.startswith(b"T")]


def _eventually(read, timeout: float = 30.0):
    """The first non-None answer of read(), polled until timeout (a failover takes seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = read()
        if value is not None:
            return value
        time.sleep(0.05)
    return None


@pytest.mark.django_db(transaction=True)
def test_primary_killed_mid_traffic__no_stale_reads_and_writes_come_back(
    shared_database_env, sentinel_set, clean_redis_servers, make_cache, capsys
):
    """Writers and readers on PostgreSQL over a Sentinel partition and two plain ones;
    the primary is killed mid-run: no reader goes back in time, and writes through
    the Sentinel partition fail only until Sentinel names the new primary."""
    location = [sentinel_set.url(), *(s.url for s in clean_redis_servers[:2])]
    setting = stress.cache_setting(location, "sn")
    env = {**shared_database_env, "TIERCACHE_TEST_CACHE": json.dumps(setting)}
    pks = [Product.objects.create(name=f"f{i}").pk for i in range(12)]
    probe_cache = make_cache(sentinel_set.url(), RAISE_ERRORS=True, **FAST)

    def kill() -> stress.Probe:
        with stress.Probe(probe_cache, ["probe"]) as probe:
            killed = time.monotonic()
            crash(sentinel_set.primary)
            probe.disturbed(since=killed)
        return probe

    totals, probe = stress.run_disturbed(env, pks, kill)
    stress.show(capsys, stress.describe("sentinel, primary killed", totals, probe.figures()))
    assert sentinel_set.current_primary_port() == sentinel_set.replica.port
    stress.assert_no_stale_reads_and_bounded_errors(totals, probe)
