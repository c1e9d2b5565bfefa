"""The circuit breaker: what opens it, what does not, and how it closes again."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_tiercache.exceptions import PartitionUnavailable

THREADS = 8


def concurrently(call, threads=THREADS):
    """Run `call` in `threads` threads released at the same moment; what each
    returned, or the exception it raised."""
    barrier = threading.Barrier(threads)

    def run():
        barrier.wait()
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc

    with ThreadPoolExecutor(threads) as pool:
        return [f.result() for f in [pool.submit(run) for _ in range(threads)]]


def test_an_exhausted_connection_pool__does_not_open_the_breaker(clean_redis_servers, make_cache):
    # django-redis keeps one pool per URL for the whole process: a URL of this
    # test's own (database 5) gets a pool of one connection that no other test shares.
    url = f"redis://127.0.0.1:{clean_redis_servers[0].port}/5"
    cache = make_cache(
        [url],
        CONNECTION_POOL_KWARGS={"max_connections": 1},
        BREAKER_FAILURES=2,
        BREAKER_COOLDOWN=30.0,
    )
    cache.set("k", 1)
    partition = cache._partitions[0]
    held = partition.store.pool.get_connection()  # the pool's only connection, busy elsewhere
    try:
        results = concurrently(lambda: [cache.get("k", "missed") for _ in range(3)])
    finally:
        partition.store.pool.release(held)
    assert results == [["missed"] * 3] * THREADS  # no connection to be had: misses
    assert (partition.breaker.failures, partition.breaker.trips) == (0, 0)
    assert cache.get("k") == 1  # the server was fine all along, and is used again at once


def test_after_the_cooldown__one_call_probes_and_the_others_fail_fast(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(
        [server.url],
        RAISE_ERRORS=True,
        BREAKER_FAILURES=1,
        SOCKET_TIMEOUT=1.0,
        SOCKET_CONNECT_TIMEOUT=1.0,
        BREAKER_COOLDOWN=0.3,
    )
    cache.set("k", 1)
    server.pause()
    with pytest.raises(RedisTimeoutError):
        cache.get("k")  # the breaker opens
    time.sleep(0.4)
    outcomes = concurrently(lambda: cache.get("k"))
    probes = [o for o in outcomes if not isinstance(o, PartitionUnavailable)]
    assert len(probes) == 1  # the others did not wait for the hung server
    assert isinstance(probes[0], RedisTimeoutError)
    with pytest.raises(PartitionUnavailable):
        cache.get("k")  # the probe failed: open for another cooldown
    server.resume()
    time.sleep(0.4)
    assert cache.get("k") == 1  # this probe succeeds and closes the breaker
    assert concurrently(lambda: cache.get("k")) == [1] * THREADS


def test_a_hung_server__costs_a_request_one_socket_timeout_not_one_per_call(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache(
        [server.url],
        RAISE_ERRORS=True,
        BREAKER_FAILURES=3,
        SOCKET_TIMEOUT=0.3,
        BREAKER_COOLDOWN=30.0,
    )
    cache.set("k", 1)
    server.pause()
    errors = []
    for call in (lambda: cache.get("k"), lambda: cache.set("k", 2), lambda: cache.get_many(["k"])):
        with pytest.raises(RedisError) as raised:
            call()
        errors.append(raised.value)
    timeouts = [e for e in errors if isinstance(e, RedisTimeoutError)]
    assert len(timeouts) == 1
    assert all(isinstance(e, PartitionUnavailable) for e in errors[1:])


def test_refused_connections__open_the_breaker_only_after_breaker_failures(
    closed_port_url, make_cache
):
    cache = make_cache(
        [closed_port_url], RAISE_ERRORS=True, BREAKER_FAILURES=3, BREAKER_COOLDOWN=30.0
    )
    errors = []
    for _ in range(4):
        with pytest.raises(RedisConnectionError) as raised:
            cache.get("k")
        errors.append(type(raised.value))
    assert errors == [RedisConnectionError] * 3 + [PartitionUnavailable]


def test_the_breakers_state__reads_half_open_past_the_cooldown_until_the_server_answers(
    closed_port_url, make_cache
):
    """The statistics page must not call a breaker "closed" while its server has not
    answered since it failed: past the cool-down it is half-open (the next call probes)."""
    from django_tiercache.stats.partitions import describe

    cache = make_cache([closed_port_url], BREAKER_FAILURES=1, BREAKER_COOLDOWN=0.3)
    partition = cache._partitions[0]
    assert (partition.breaker.state, describe(partition)["breaker"]) == ("closed", "closed")
    assert cache.get("k") is None  # refused: the breaker opens
    assert (partition.breaker.state, describe(partition)["breaker"]) == ("open", "open")
    time.sleep(0.4)
    assert describe(partition)["breaker"] == "half-open"
    assert partition.breaker.state == "half-open"  # describing it took no probe
    assert cache.get("k") is None  # the probe is refused too: open again
    assert partition.breaker.state == "open"
