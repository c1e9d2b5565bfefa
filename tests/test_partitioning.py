"""Routing keys to partitions: spread, stability, hashtags, one round trip per partition."""

import threading
from collections import Counter

import pytest
import redis.connection

from django_tiercache.storage.partitioning import RendezvousPartitioner

FOUR = [f"redis://127.0.0.1:{6380 + i}/0" for i in range(4)]
FIVE = [*FOUR, "redis://127.0.0.1:6384/0"]
KEYS = [f":1:user:{i}" for i in range(100_000)]


def owners(names):
    partitioner = RendezvousPartitioner(names)
    return [names[partitioner.index(key)] for key in KEYS]


def test_adding_a_fifth_partition__moves_at_most_22_percent_mostly_to_the_new_one():
    before, after = owners(FOUR), owners(FIVE)
    moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(moved) / len(KEYS) <= 0.22
    # Bounded loads shift a few slots between old partitions to keep the spread even.
    assert sum(b == FIVE[-1] for _, b in moved) / len(moved) >= 0.95


@pytest.mark.parametrize("names", [FOUR, FIVE, ["a", "b", "c"], ["memory://x", "memory://y"]])
def test_no_partition_holds_more_than_1_05_times_the_mean(names):
    counts = Counter(owners(names))
    assert len(counts) == len(names)
    assert max(counts.values()) <= 1.05 * len(KEYS) / len(names)


def test_routing_depends_on_names_not_on_their_order_in_location():
    forward = RendezvousPartitioner(FOUR)
    backward = RendezvousPartitioner(FOUR[::-1])
    for key in KEYS[:2000]:
        assert FOUR[forward.index(key)] == FOUR[::-1][backward.index(key)]


def test_a_hashtag_routes_by_the_hashtag_alone():
    partitioner = RendezvousPartitioner(FOUR)
    homes = {partitioner.index(f":1:{{user:42}}:{suffix}") for suffix in range(200)}
    assert len(homes) == 1
    assert homes == {partitioner.index(":9:other-prefix{user:42}")}
    spread = {partitioner.index(f":1:user:42:{suffix}") for suffix in range(200)}
    assert len(spread) == 4


def test_partition_for__names_the_partition_that_holds_the_key(clean_redis_servers, make_cache):
    urls = [server.url for server in clean_redis_servers]
    cache = make_cache(urls)
    for i in range(20):
        cache.set(f"key-{i}", i)
        holder = cache.partition_for(f"key-{i}")
        server = clean_redis_servers[urls.index(holder)]
        assert server.client().exists(cache.make_key(f"key-{i}")) == 1


def test_partition_for__uses_partition_names_and_hides_passwords(make_cache):
    named = make_cache(["memory://one", "memory://two"], PARTITION_NAMES=["left", "right"])
    assert named.partition_for("anything") in {"left", "right"}
    secret = make_cache(["redis://:hunter2@127.0.0.1:1/0"])
    assert secret.partition_for("k") == "redis://:***@127.0.0.1:1/0"


@pytest.fixture
def commands_sent(monkeypatch):
    """Count the sends of this thread (each one command, or commands pipelined in
    one buffer), per server port (Redis itself stays real).

    Only this thread's: earlier tests leave background threads behind (statistics
    publication, L1 subscribers pinging) whose commands are not the operation's."""
    sent = Counter()
    # Every send goes through send_packed_command (send_command too); a plain
    # read of tagged entries sends its MGET and the HMGETs of their tokens as one
    # packed buffer (stores/redis.py, Pipelined): one send, one round trip.
    original = redis.connection.AbstractConnection.send_packed_command
    mine = threading.get_ident()

    def counting(self, *args, **kwargs):
        if threading.get_ident() == mine:
            sent[self.port] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_multi_key_calls__send_one_command_per_partition(
    clean_redis_servers, make_cache, commands_sent
):
    cache = make_cache([server.url for server in clean_redis_servers])
    keys = [f"key-{i}" for i in range(100)]
    cache.set_many(dict.fromkeys(keys, "v"), tags=["t"])
    cache.get_many(keys)  # the first read of tagged entries grants the leases
    ports = {server.port for server in clean_redis_servers}
    for operation in (
        lambda: cache.get_many(keys),
        lambda: cache.set_many(dict.fromkeys(keys, 1)),
        lambda: cache.delete_many(keys),
    ):
        commands_sent.clear()
        operation()
        assert dict(commands_sent) == dict.fromkeys(ports, 1)


def test_get_of_a_tagged_entry__is_one_command(clean_redis_servers, make_cache, commands_sent):
    cache = make_cache([server.url for server in clean_redis_servers])
    cache.set("tagged", {"a": 1}, tags=["t1", "t2"])
    assert cache.get("tagged") == {"a": 1}
    commands_sent.clear()
    assert cache.get("tagged") == {"a": 1}
    assert sum(commands_sent.values()) == 1
