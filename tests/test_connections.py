"""A Redis store's idle connections: reused call after call, given back on close,
reconnected (and the server greeted) when the server closed them meanwhile."""

import gc
import os
import threading
import time

import pytest


def in_use(cache) -> int:
    return len(cache._partitions[0].store.pool._in_use_connections)


def test_calls__reuse_one_connection_until_close_gives_it_back(clean_redis_servers, make_cache):
    url = f"redis://127.0.0.1:{clean_redis_servers[0].port}/3"
    cache = make_cache([url])
    before = in_use(cache)
    for i in range(5):
        cache.set(f"k{i}", i)
        assert cache.get(f"k{i}") == i
    store = cache._partitions[0].store
    assert len(store._idle) == 1  # one connection served all ten calls
    assert in_use(cache) == before + 1
    cache.close()  # Django calls this after every request
    assert store._idle == []
    assert in_use(cache) == before


def test_a_thread_that_ends__gives_its_connections_back(clean_redis_servers, make_cache):
    url = f"redis://127.0.0.1:{clean_redis_servers[0].port}/3"
    main = make_cache([url])
    before = in_use(main)
    from django_tiercache.backend import TierCache

    def request():  # a thread's own backend instance, never closed
        cache = TierCache([url], {"KEY_PREFIX": main.key_prefix})
        cache.set("k", 1)
        assert cache.get("k") == 1

    thread = threading.Thread(target=request)
    thread.start()
    thread.join()
    gc.collect()
    assert in_use(main) == before


def test_a_small_pool__is_used_directly(clean_redis_servers, make_cache):
    url = f"redis://127.0.0.1:{clean_redis_servers[0].port}/4"
    cache = make_cache([url], CONNECTION_POOL_KWARGS={"max_connections": 4})
    cache.set("k", 1)
    assert cache.get("k") == 1
    assert cache._partitions[0].store._idle == []
    assert in_use(cache) == 0


def test_a_server_that_restarted_while_a_connection_was_idle__is_greeted_again(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.set("k", 1, tags=["t"])
    assert cache.get("k") == 1
    server.stop()
    server.start()  # empty: no functions, no meta hash; the idle socket is closed
    assert cache.get("k") is None  # a miss, not an error: the call reconnected
    assert not cache._policy.counts  # no failed call was counted
    cache.set("k", 2, tags=["t"])
    assert cache.get("k") == 2
    assert cache._partitions[0].breaker.failures == 0


def test_an_unlock_sent_without_waiting__is_read_at_the_next_release_and_delays_no_other_call(
    clean_redis_servers, make_cache
):
    server = clean_redis_servers[0]
    writer, reader = make_cache([server.url]), make_cache([server.url])
    writer.lock_tags("w", ["row:1"], seconds=30)
    reader.set("k", 1, tags=["row:1"])
    assert reader.get("k") is None  # locked: not cached
    writer.unlock_tags("w", ["row:1"], wait=False)
    store = writer._partitions[0].store
    (conn,) = store._releasing
    assert conn._tiercache_owed == 1  # sent; its reply not read yet
    writer.lock_tags("w2", ["row:2"], seconds=30)  # on another connection: no wait
    assert store._idle and conn not in store._idle
    assert conn._tiercache_owed == 1
    writer.unlock_tags("w2", ["row:2"], wait=False)  # reads the first reply, sends its own
    assert store._releasing == [conn]
    assert conn._tiercache_owed == 1
    for tag in ("row:1", "row:2"):
        reader.set(tag, 1, tags=[tag])
        assert reader.get(tag) == 1


def test_close__reads_what_an_unlock_sent_without_waiting_owes(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    writer, reader = make_cache([server.url]), make_cache([server.url])
    before = in_use(writer)
    writer.lock_tags("w", ["row:1"], seconds=30)
    writer.unlock_tags("w", ["row:1"], wait=False)
    (conn,) = writer._partitions[0].store._releasing
    writer.close()
    assert conn._tiercache_owed == 0
    assert in_use(writer) == before  # back in the pool, with nothing left unread
    assert not conn.can_read()
    reader.set("k", 1, tags=["row:1"])
    assert reader.get("k") == 1


def test_an_unlock_sent_without_waiting_that_fails__is_counted(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.lock_tags("w", ["row:1"], seconds=30)
    server.stop()
    server.start()  # no functions: the release fails ("function not found")
    cache.unlock_tags("w", ["row:1"], wait=False)
    assert cache.get("k") is None  # the next command still works
    cache.close()  # reads what the release owes
    name = cache._partitions[0].name
    assert cache._policy.counts[("error:unlock", name)] == 1


def test_with_a_small_pool__an_unlock_is_awaited(clean_redis_servers, make_cache):
    url = f"redis://127.0.0.1:{clean_redis_servers[0].port}/4"
    writer = make_cache([url], CONNECTION_POOL_KWARGS={"max_connections": 4})
    reader = make_cache([url], CONNECTION_POOL_KWARGS={"max_connections": 4})
    writer.lock_tags("w", ["row:1"], seconds=30)
    writer.unlock_tags("w", ["row:1"], wait=False)
    assert in_use(writer) == 0  # nothing parked, nothing owed
    reader.set("k", 1, tags=["row:1"])
    assert reader.get("k") == 1


def test_an_unlock_that_cannot_be_sent__is_counted(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.lock_tags("w", ["row:1"], seconds=30)
    server.stop()
    cache.unlock_tags("w", ["row:1"], wait=False)  # does not raise: the lock expires anyway
    name = cache._partitions[0].name
    assert cache._policy.counts[("error:unlock", name)] == 1
    server.start()
    assert cache.get("k") is None


def test_a_forked_child__never_uses_the_parents_idle_connections(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.set("k", 1)
    store = cache._partitions[0].store
    (parents,) = store._idle
    pid = os.fork()
    if pid == 0:  # the child: exits 0 only if it read through a connection of its own
        ok = cache.get("k") == 1 and parents not in store._idle and len(store._idle) == 1
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store._idle == [parents]  # the parent's own list is untouched
    assert cache.get("k") == 1


def test_a_plain_command_whose_greeting_fails__runs_once_and_fails(clean_redis_servers, make_cache):
    """After a restart the greeting fails (no Functions yet) while a plain command
    sent behind it runs: sent again, it would run twice (an INCR would count
    two). It fails instead; the next call greets and works."""
    from django_tiercache.storage.stores.redis import GreetingFailed, RedisCall

    server = clean_redis_servers[0]
    cache = make_cache([server.url])
    cache.get("k")  # greeted, the Functions loaded
    server.stop()
    server.start()  # empty: no Functions
    store = cache._partitions[0].store
    counter = f"{store.ns}counted"
    with pytest.raises(GreetingFailed):
        RedisCall(store, ("INCR", counter), int).result()
    assert server.client().get(counter) == b"1"  # it ran, once
    assert cache.get("k") is None  # greeted again: a miss, not an error
    assert store.claim(["other"], "me", 5000).result() == [True]


def test_two_caches_on_one_server__each_keep_their_own_socket_timeout(
    clean_redis_servers, make_cache
):
    """django-redis keeps one pool per URL: the second cache made on a server would
    get the first one's timeouts. With the server frozen, the impatient cache
    fails at once and the patient one waits for it to come back."""
    server = clean_redis_servers[0]
    impatient = make_cache([server.url], SOCKET_TIMEOUT=0.2, BREAKER_FAILURES=100)
    patient = make_cache([server.url], SOCKET_TIMEOUT=10, BREAKER_FAILURES=100)
    patient.set("k", 1)
    assert impatient.get("k") == 1 and patient.get("k") == 1  # both connected
    result = {}
    server.pause()
    try:
        waiting = threading.Thread(target=lambda: result.update(got=patient.get("k")))
        waiting.start()
        assert impatient.get("k") is None  # timed out: a miss
        time.sleep(0.5)  # well past the impatient timeout
    finally:
        server.resume()
    waiting.join(10)
    assert result == {"got": 1}
    # The two share their error counts (same servers and prefix): one failure, the impatient one's.
    assert sum(patient._policy.counts.values()) == 1
