"""Where a call's microseconds go: the server's side and the client's, measured apart.

Server side: Redis' own accounting (INFO commandstats, usec_per_call) of
each Function against the plain command django-redis sends, on a server no
one else uses. Commands are pipelined so that nothing but the server's work
is counted, and the least of five trials is kept, which noise can only raise.

Client side: the steps of one TierCache get, each timed alone over many
calls (perf_counter_ns), against the whole get.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

TRIALS = 5
PIPELINED = 2000
VALUES = 33  # about what each of 3 partitions holds of a get_many(100)


def _usec_per_call(client: redis.Redis, commands: list[tuple], name: str | tuple) -> float:
    """Server µs per round of `commands`: of the commands called `name` (or of
    each of several names, summed)."""
    names = (name,) if isinstance(name, str) else name
    best = float("inf")
    for _ in range(TRIALS):
        pipe = client.pipeline(transaction=False)
        for _ in range(PIPELINED):
            for command in commands:
                pipe.execute_command(*command)
        client.config_resetstat()
        pipe.execute()
        stats = client.info("commandstats")
        best = min(best, sum(stats[f"cmdstat_{n}"]["usec"] for n in names) / PIPELINED)
    return best


def server_side(port: int, body: bytes) -> list[tuple[str, float, str]]:
    """(label, µs of server time per call, what it is compared with)."""
    from django_tiercache.storage.stores import lua
    from django_tiercache.storage.stores.plain_reads import _plan

    client = redis.Redis(host="127.0.0.1", port=port, db=15)
    client.execute_command("FUNCTION", "LOAD", "REPLACE", lua.LIBRARY)
    ns = "where:_tc:"

    def fcall(name: str, keys: list[str], *args: Any) -> tuple:
        return ("FCALL", lua.function_name(name), len(keys), *keys, ns, *args)

    def write(key: str, tags: list[str]) -> tuple:
        args = ["fresh", "0", 0, "0", 600_000, len(tags), *tags, "0", body]
        return fcall("write", [key], *args)

    client.execute_command(*fcall("hello", [], "epoch", 0))
    keys = [f"where:k{i}" for i in range(VALUES)]
    client.set("where:plain", body)
    client.execute_command(*write("where:untagged", []))
    for key in ["where:tagged", *keys]:
        client.execute_command(*write(key, ["t1", "t2"]))
    plain_keys = [f"where:p{i}" for i in range(VALUES)]
    # What a plain read (stores/plain_reads.py) sends behind the entries' MGET:
    # the HMGETs of the tokens' buckets and the GET of the generation.
    behind = list(_plan(ns, ("t1", "t2"))[0].commands)
    plain = ("mget", "hmget", "get")
    client.mset(dict.fromkeys(plain_keys, body))
    rows = [
        ("GET (django-redis get)", _usec_per_call(client, [("GET", "where:plain")], "get"), ""),
        (
            "read Function, untagged",
            _fcall(client, [fcall("read", ["where:untagged"], "0")]),
            "GET",
        ),
        (
            "plain read, untagged (MGET of 1)",
            _usec_per_call(client, [("MGET", "where:untagged")], "mget"),
            "GET",
        ),
        ("read Function, 2 tags", _fcall(client, [fcall("read", ["where:tagged"], "0")]), "GET"),
        (
            f"plain read, 2 tags (MGET of 1, {len(behind) - 1} HMGET, GET)",
            _usec_per_call(client, [("MGET", "where:tagged"), *behind], plain),
            "GET",
        ),
        (
            f"MGET of {VALUES} (django-redis get_many)",
            _usec_per_call(client, [("MGET", *plain_keys)], "mget"),
            "",
        ),
        (
            f"read Function, {VALUES} entries, 2 tags",
            _fcall(client, [fcall("read", keys, "0")]),
            f"MGET of {VALUES}",
        ),
        (
            f"plain read, {VALUES} entries, 2 tags",
            _usec_per_call(client, [("MGET", *keys), *behind], plain),
            f"MGET of {VALUES}",
        ),
        (
            "SET (django-redis set)",
            _usec_per_call(client, [("SET", "where:plain", body)], "set"),
            "",
        ),
        ("write Function, 2 tags", _fcall(client, [write("where:tagged", ["t1", "t2"])]), "SET"),
        (
            "lock + unlock Functions, 2 tags",
            _fcall(
                client,
                [
                    fcall("lock", [], "epoch", 0, "w", 5000, "t1", "t2"),
                    fcall("unlock", [], "w", "t1", "t2"),
                ],
            ),
            "",
        ),
    ]
    client.flushdb()
    client.close()
    return rows


def _fcall(client: redis.Redis, commands: list[tuple]) -> float:
    return _usec_per_call(client, commands, "fcall")


def _per_call_ns(fn: Callable[[], Any], calls: int = 20_000) -> float:
    best = float("inf")
    for _ in range(TRIALS):
        started = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def client_side(cache: Any, key: str) -> list[tuple[str, float]]:
    """The steps of cache.get(key) on a one-partition TierCache, µs each (least of five)."""
    made = cache.make_and_validate_key(key)
    partition = cache._partitions[0]
    store = partition.store
    leased = cache._fencing.enabled
    _, bodies = store.read([made], leased).result()
    body = bodies[0]
    observer = cache._observer
    outcome = partition.run("read", [made], leased)
    calls = partition.observer
    steps = [
        ("whole get", lambda: cache.get(key)),
        ("key: make_and_validate_key", lambda: cache.make_and_validate_key(key)),
        ("call: connection, send, wait, reply", lambda: store.read([made], leased).result()),
        ("decode: MAC check + unpickle", lambda: cache._codec.decode(made, body)),
        (
            "statistics: one call and one read counted",
            lambda: (calls.called(outcome, 1000, 0), observer.read([made], 1)),
        ),
    ]
    return [(label, _per_call_ns(fn) / 1000) for label, fn in steps]


def floor_round_trip(port: int) -> float:
    """A raw redis-py PING's µs: what any call pays for the wire and two syscalls."""
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return _per_call_ns(client.ping, 5000) / 1000
    finally:
        client.close()


def measure(port: int, body: bytes, cache: Any, key: str) -> dict[str, Any]:
    return {
        "server": server_side(port, body),
        "client": client_side(cache, key),
        "ping": floor_round_trip(port),
    }


def print_where(where: dict[str, Any]) -> None:
    print("where the microseconds go")
    print("  server side (Redis' commandstats, pipelined, least of 5 trials; µs per call)")
    by_label = {label.split(" (")[0]: us for label, us, _ in where["server"]}
    for label, us, against in where["server"]:
        extra = f"  ({us / by_label[against]:.0f}x {against})" if against else ""
        print(f"    {label:<42} {us:6.2f}{extra}")
    print("  client side, one get of a 2-tag entry on one partition (least of 5 runs; µs)")
    for label, us in where["client"]:
        print(f"    {label:<42} {us:6.2f}")
    print(f"    {'a raw redis-py PING, for the wire':<42} {where['ping']:6.2f}")
    print()
