"""Single flight (storage/single_flight.py) across threads and real OS processes."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured

from tests.redis_servers import SHARED_REDIS_URL
from tests.test_l1 import L1, Worker


@pytest.fixture
def processes(tmp_path):
    """Start worker processes whose default cache is a TierCache with `options`,
    all sharing one SQLite file (so that they read the same rows)."""
    started: list[Worker] = []
    prefix = f"sf{uuid.uuid4().hex[:8]}"

    def start(options: dict) -> Worker:
        cache = {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": SHARED_REDIS_URL,
            "KEY_PREFIX": prefix,
            "OPTIONS": options,
        }
        env = {
            "TIERCACHE_TEST_CACHE": json.dumps(cache),
            "TIERCACHE_TEST_SQLITE": str(tmp_path / "shared.sqlite3"),
        }
        worker = Worker(env)
        started.append(worker)
        return worker

    yield start, f"{prefix}:counter"
    for worker in started:
        worker.close()
    redis.Redis.from_url(SHARED_REDIS_URL).delete(f"{prefix}:counter")


def loads_counted(counter: str) -> int:
    return int(redis.Redis.from_url(SHARED_REDIS_URL).get(counter) or 0)


@pytest.mark.parametrize("single_flight", [True, False])
def test_get_object__50_callers_in_two_processes_run_one_query(processes, single_flight):
    start, counter = processes
    first = start({"L1": L1, "SINGLE_FLIGHT": single_flight})
    second = start({"SINGLE_FLIGHT": single_flight})
    assert first("create_shelf", 7, "Poetry")
    for worker in (first, second):
        worker.send("get_object_flight", 25, 7, SHARED_REDIS_URL, counter)
    names = first.receive() + second.receive()
    assert names == ["Poetry"] * 50
    if single_flight:
        assert loads_counted(counter) == 1
    else:  # the option really turns it off: the same callers then query many times
        assert loads_counted(counter) > 1


@pytest.mark.parametrize("single_flight", [True, False])
def test_async_cached__50_callers_in_two_processes_compute_once(processes, single_flight):
    start, counter = processes
    first = start({"L1": L1, "SINGLE_FLIGHT": single_flight})
    second = start({"SINGLE_FLIGHT": single_flight})
    for worker in (first, second):
        worker.send("cached_flight", 25, SHARED_REDIS_URL, counter)
    results = first.receive() + second.receive()
    assert len(results) == 50
    if single_flight:
        assert loads_counted(counter) == 1
        assert len(set(results)) == 1
    else:
        assert loads_counted(counter) > 1


def test_get_or_set_many__threads_share_the_load_of_each_key(make_cache):
    cache = make_cache(SHARED_REDIS_URL)
    loaded: list[list[str]] = []
    together = threading.Barrier(10)
    release = threading.Event()

    def load(keys):
        loaded.append(sorted(keys))
        release.wait(5)  # held while the other callers arrive and find the keys loading
        return {k: k.upper() for k in keys}

    results = []

    def call():
        together.wait()
        results.append(cache.get_or_set_many({k: () for k in "abc"}, load))

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    threading.Timer(0.3, release.set).start()
    for t in threads:
        t.join()
    assert loaded == [["a", "b", "c"]]
    assert results == [{"a": "A", "b": "B", "c": "C"}] * 10


def claim_as_another_process(cache, key, ttl_ms):
    made = cache.make_and_validate_key(key)
    assert cache._partition(made).run("claim", [made], "another-process", ttl_ms).value == [True]


def test_claim_of_a_dead_loader__expires_and_the_next_caller_loads(make_cache):
    cache = make_cache(SHARED_REDIS_URL, SINGLE_FLIGHT={"CLAIM_TTL": 5, "WAIT": 5})
    claim_as_another_process(cache, "k", 300)  # its holder died: nothing will be stored
    calls = []
    assert cache.get_or_set("k", lambda: calls.append(1) or "mine") == "mine"
    assert calls == [1]
    assert cache.get("k") == "mine"


def test_loader_slower_than_wait__the_waiter_loads_itself(make_cache):
    cache = make_cache(SHARED_REDIS_URL, SINGLE_FLIGHT={"CLAIM_TTL": 30, "WAIT": 0.3})
    claim_as_another_process(cache, "k", 30_000)  # held far longer than WAIT
    calls = []
    values = cache.get_or_set_many({"k": ()}, lambda keys: calls.append(keys) or {"k": "mine"})
    assert values == {"k": "mine"}
    assert calls == [["k"]]


@pytest.mark.parametrize(
    "value",
    [
        {"WAIT": 0},
        {"CLAIM_TTL": -1},
        {"CLAIM_TTL": "10"},
        {"TTL": 10},
        {"CLAIM_TTL": float("nan")},
        "on",
    ],
)
def test_single_flight_option__is_validated(make_cache, value):
    with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E003.*SINGLE_FLIGHT"):
        make_cache(SHARED_REDIS_URL, SINGLE_FLIGHT=value).get("k")


def test_single_flight_timings__come_from_the_option(make_cache):
    cache = make_cache(SHARED_REDIS_URL, SINGLE_FLIGHT={"WAIT": 0.5})
    assert cache._single_flight == {"CLAIM_TTL": 1.0, "WAIT": 0.5}
    assert make_cache(SHARED_REDIS_URL, SINGLE_FLIGHT=False)._single_flight is None


def test_a_loader_killed_mid_load__one_waiter_takes_over_the_others_keep_waiting(tmp_path):
    """The claim follows its holder (a heartbeat): a SIGKILLed loader's claim runs
    out within CLAIM_TTL, one waiter loads, and the rest read what it stored,
    instead of every waiter loading after WAIT."""
    import os
    import signal
    import time

    prefix = f"sfdead{uuid.uuid4().hex[:8]}"
    counter = f"{prefix}:loads"
    options: dict = {}  # the defaults
    workers = [Worker() for _ in range(4)]
    try:
        for worker in workers:
            assert worker("build", SHARED_REDIS_URL, prefix, options)
        loader, *waiters = workers
        loader.send("hang_loading", "k", SHARED_REDIS_URL, counter)
        deadline = time.monotonic() + 10
        while loads_counted(counter) < 1:  # the loader holds the claim and loads
            assert time.monotonic() < deadline, "the loader never started"
            time.sleep(0.01)
        for waiter in waiters:
            waiter.send("single_flight", "k", 3, SHARED_REDIS_URL, counter)
        time.sleep(0.5)  # the waiters wait on the loader's claim
        assert loads_counted(counter) == 1
        os.kill(loader.proc.pid, signal.SIGKILL)
        results = [value for waiter in waiters for value in waiter.receive()]
        assert len(results) == 9 and len({json.dumps(r) for r in results}) == 1
        assert loads_counted(counter) - 1 <= 2  # after the kill: one load (two at worst)
    finally:
        for worker in workers:
            worker.close()
        redis.Redis.from_url(SHARED_REDIS_URL).delete(counter)


def test_a_loader_slower_than_claim_ttl__keeps_its_claim_while_it_runs(make_cache):
    """The heartbeat renews a live loader's claim: nobody else loads meanwhile."""
    import time

    cache = make_cache(SHARED_REDIS_URL, SINGLE_FLIGHT={"CLAIM_TTL": 0.3, "WAIT": 10})
    made = cache.make_and_validate_key("slow")
    started, loads = threading.Event(), []

    def slow():
        loads.append("first")
        started.set()
        time.sleep(1.5)  # five claim lifetimes
        return "done"

    first = threading.Thread(target=lambda: cache.get_or_set("slow", slow))
    first.start()
    assert started.wait(5)
    time.sleep(0.6)  # two lifetimes: without renewal the claim would be gone
    partition = cache._partition(made)
    assert partition.run("claim", [made], "another-process", 300).value == [False]  # still held
    first.join(10)
    assert loads == ["first"] and cache.get("slow") == "done"


def function_calls(server) -> int:
    stats = redis.Redis(port=server.port).info("commandstats")
    return stats.get("cmdstat_fcall", {}).get("calls", 0)


def claims_held(servers) -> int:
    return sum(len(redis.Redis(port=s.port).keys("*:_tc:sf:*")) for s in servers)


def test_a_miss_of_many_keys__claims_and_releases_them_in_one_call_per_partition(
    clean_redis_servers, make_cache
):
    servers = clean_redis_servers[:2]
    cache = make_cache([s.url for s in servers])
    cache.set("greeted", 1, tags=["t"])  # the connections' greetings and leases, first
    cache.get_many(["greeted", "x"])
    keys = {f"k{i}": [f"t{i}"] for i in range(80)}
    held_while_loading = []

    def load(missing):
        held_while_loading.append(claims_held(servers))
        return {k: k.upper() for k in missing}

    before = [function_calls(s) for s in servers]
    assert cache.get_or_set_many(keys, load) == {k: k.upper() for k in keys}
    calls = [function_calls(s) - b for s, b in zip(servers, before, strict=True)]
    assert held_while_loading == [80]  # every key claimed before the load, in one load
    # Every claim released after it: sent without waiting for the reply, so read
    # once the release has had a moment to land (it never takes long).
    deadline = time.monotonic() + 5
    while claims_held(servers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert claims_held(servers) == 0
    # Each partition got some 40 keys. Read, claim, snapshot, write, release, with
    # the heartbeat's renewal, a greeting and a lease renewal around them: a dozen
    # calls at most, where a claim and a release per key made more than 80.
    assert all(n <= 16 for n in calls), calls


@pytest.mark.parametrize("many", [False, True])
def test_a_miss_sends_its_snapshot_while_its_claim_is_on_its_way(
    clean_redis_servers, make_cache, monkeypatch, many
):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    store = cache._partitions[0].store
    events = []
    claim, snapshot = store.claim, store.snapshot

    class Answer:  # the claim's reply, as the caller reads it
        def __init__(self, call):
            self.call = call

        def result(self):
            events.append("claim read")
            return self.call.result()

    def watched_claim(*args):
        events.append("claim sent")
        return Answer(claim(*args))

    def watched_snapshot(*args):
        events.append("snapshot sent")
        return snapshot(*args)

    monkeypatch.setattr(store, "claim", watched_claim)
    monkeypatch.setattr(store, "snapshot", watched_snapshot)
    if many:
        assert cache.get_or_set_many({"k": ["t"]}, lambda keys: dict.fromkeys(keys, "v")) == {
            "k": "v"
        }
    else:
        assert cache.get_or_set("k", lambda: "v", tags=["t"]) == "v"
    # One round trip for both (the heartbeat may renew the claim after these).
    assert events[:3] == ["claim sent", "snapshot sent", "claim read"]
    assert cache.get("k") == "v"  # stored under the snapshot taken then
    cache.invalidate_tags("t")
    assert cache.get("k") is None
