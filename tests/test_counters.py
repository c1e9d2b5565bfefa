"""incr/decr: what they raise, so that `except ValueError: cache.set(key, 1)` is safe."""

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from django_tiercache.exceptions import PartitionUnavailable

OUTAGE = {"SOCKET_TIMEOUT": 0.3, "SOCKET_CONNECT_TIMEOUT": 0.3, "BREAKER_COOLDOWN": 30.0}


def count_hit(cache, key):
    """The usual counter idiom: a missing counter starts at 1."""
    try:
        return cache.incr(key)
    except ValueError:
        cache.set(key, 1)
        return 1


@pytest.mark.parametrize("raise_errors", [False, True], ids=["quiet", "raising"])
def test_incr_decr_on_an_unreachable_partition__raise_its_error_not_not_found(
    closed_port_url, make_cache, raise_errors
):
    cache = make_cache([closed_port_url], RAISE_ERRORS=raise_errors, BREAKER_FAILURES=2, **OUTAGE)
    with pytest.raises(RedisConnectionError) as refused:
        cache.incr("hits")
    assert not isinstance(refused.value, PartitionUnavailable)
    with pytest.raises(RedisConnectionError):
        cache.decr("hits")
    with pytest.raises(PartitionUnavailable):  # the breaker is open now
        cache.incr("hits", 5)
    with pytest.raises(PartitionUnavailable):
        asyncio.run(cache.aincr("hits"))
    with pytest.raises(PartitionUnavailable):
        asyncio.run(cache.adecr("hits"))


def test_a_counter_on_a_hung_server__survives_the_count_hit_idiom(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url], **OUTAGE)
    cache.set("hits", 41, timeout=None)
    server.pause()
    for _ in range(3):
        with pytest.raises(RedisError):
            count_hit(cache, "hits")
    server.resume()
    # Never reset to 1. (The first incr, sent before it timed out, may run now
    # that the server wakes up: a timeout does not say the command was not run.)
    assert int(server.client().get(cache.make_key("hits"))) in (41, 42)
    cache._partitions[0].breaker.succeeded()  # the operator's "it is back" (skips the cooldown)
    assert count_hit(cache, "hits") in (42, 43)


@pytest.mark.parametrize("value", [None, "text", [1], 1.5], ids=["none", "str", "list", "float"])
@pytest.mark.parametrize("operation", ["incr", "decr"])
def test_incr_decr__a_value_that_is_not_an_integer_raises_type_error(any_cache, operation, value):
    any_cache.set("key", value)
    with pytest.raises(TypeError):
        getattr(any_cache, operation)("key")
    assert any_cache.get("key", "missing") == value
