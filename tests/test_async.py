"""The async API: native on the event loop (storage/bridge.py), the same rules as sync.

Real Redis servers (one, four partitions, a Cluster, a Sentinel-managed primary)
and memory://: every one runs in the calling thread with no thread hop (the
Cluster's own cases: tests/test_cluster_async.py).
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync

from tests.test_l1 import L1, read_into_l1, wait_live


def run(coroutine):
    return asyncio.run(coroutine)


def test_every_async_method__does_what_its_sync_twin_does(any_cache, any_location):
    cache = any_cache

    async def scenario():
        assert await cache.aset("a", {"x": 1}, tags=["t"]) is not False
        assert await cache.aget("a") == {"x": 1}
        assert await cache.ahas_key("a") is True
        assert await cache.aadd("a", 2) is False
        await cache.aset_many({"b": 1, "c": 2}, tags=["t"])
        assert await cache.aget_many(["a", "b", "c", "zz"]) == {"a": {"x": 1}, "b": 1, "c": 2}
        assert await cache.aincr("b", 5) == 6
        assert await cache.adecr("b", 2) == 4
        assert await cache.atouch("c", 100) is True
        assert 0 < await cache.attl("c") <= 100
        assert 0 < await cache.apttl("c") <= 100_000
        assert await cache.aexpire("c", 50) is True
        assert await cache.apersist("c") is True
        assert await cache.attl("c") is None
        assert await cache.aget_or_set("d", lambda: 7, tags=["t"]) == 7
        assert await cache.aget_or_set_many({"e": ("t",)}, lambda keys: dict.fromkeys(keys, 8)) == {
            "e": 8
        }
        assert await cache.aincr_version("e") == 2
        assert await cache.aget("e", version=2) == 8
        await cache.ainvalidate_tags("t")
        assert await cache.aget("a") is None and await cache.aget("d") is None
        await cache.aset("p:1", 1)
        assert await cache.akeys("p:*") == ["p:1"]
        assert await cache.adelete_pattern("p:*") == 1
        await cache.aset("f", 1)
        assert await cache.adelete("f") is True
        await cache.aset_many({"g": 1, "h": 1})
        assert await cache.adelete_many(["g", "h", "zz"]) == 2
        await cache.aset("i", 1)
        await cache.aclear()
        assert await cache.aget("i") is None

    run(scenario())
    assert cache.native_async is True


def test_native__runs_in_the_callers_thread_and_mixes_with_sync_callers(
    make_cache, shared_redis_url
):
    cache = make_cache(shared_redis_url)
    assert cache.native_async
    threads = []

    def load():
        threads.append(threading.get_ident())
        return 1

    async def scenario():
        assert await cache.aget_or_set("k", load, tags=["t"]) == 1
        cache.set("s", "from sync", tags=["t"])
        assert await cache.aget("s") == "from sync"
        await cache.aset("a", "from async", tags=["t"])
        assert cache.get("a") == "from async"
        cache.invalidate_tags("t")
        assert await cache.aget("a") is None

    run(scenario())
    assert threads == [threading.get_ident()]  # no thread hop


def test_single_flight__one_async_load_for_many_coroutines(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url)
    loads = []

    async def load():
        loads.append(1)
        await asyncio.sleep(0.2)
        return 42

    async def scenario():
        return await asyncio.gather(*[cache.aget_or_set("k", load) for _ in range(30)])

    assert set(run(scenario())) == {42}
    assert len(loads) == 1


def test_l1__one_per_process_shared_by_sync_and_async(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url, L1=L1)
    wait_live(cache)
    cache.set("k", 1, tags=["t"])
    assert read_into_l1(cache, "k") == 1

    async def scenario():
        assert await cache.aget("k") == 1  # the copy the sync read kept
        await cache.ainvalidate_tags("t")

    run(scenario())
    assert cache.get("k") is None


def test_a_closed_loop__leaves_nothing_the_next_loop_trips_on(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url)
    for i in range(3):
        run(cache.aset("k", i))
        assert run(cache.aget("k")) == i
    assert async_to_sync(cache.aget)("k") == 2


def test_a_stopped_partition__never_delays_coroutines_reading_the_others(
    make_cache, clean_redis_servers
):
    stalled, healthy = clean_redis_servers[:2]
    cache = make_cache([stalled.url, healthy.url], SOCKET_TIMEOUT=5)
    on_stalled = next(f"k{i}" for i in range(100) if cache.partition_for(f"k{i}") == stalled.url)
    others = [f"k{i}" for i in range(300) if cache.partition_for(f"k{i}") == healthy.url][:100]
    for key in others:
        cache.set(key, key)

    async def scenario():
        await cache.aget(others[0])  # connections made before the stall
        stalled.pause()
        try:
            hung = asyncio.ensure_future(cache.aget(on_stalled))
            await asyncio.sleep(0.05)
            values = await asyncio.gather(*[cache.aget(key) for key in others])
            still_waiting = not hung.done()
            assert await hung is None  # its socket timeout: a miss
            return values, still_waiting
        finally:
            stalled.resume()

    values, still_waiting = run(scenario())
    assert values == others
    assert still_waiting  # all 100 answered while the stalled read still waited


async def cancelled_mid_call(cache, warm: str, server) -> tuple:
    """An aget_or_set("k") cancelled while `server` (the one holding "k" and `warm`)
    is paused, then the same key and `warm` read again once it runs: (2, 1) when
    the cancelled call gave its connection back and left no claim."""
    await cache.aset(warm, 1)
    server.pause()
    try:
        task = asyncio.ensure_future(cache.aget_or_set("k", lambda: 1))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        server.resume()
    return await cache.aget_or_set("k", lambda: 2), await cache.aget(warm)


def test_cancelled_mid_call__returns_its_connection_and_leaves_no_claim(
    make_cache, clean_redis_servers
):
    server = clean_redis_servers[0]
    cache = make_cache(server.url, SOCKET_TIMEOUT=5)
    assert run(cancelled_mid_call(cache, "warm", server)) == (2, 1)
    claims = [k for k in server.client().keys("*") if b"sf:" in k]
    assert claims == []


def test_adelete_pattern__scans_on_the_loop_so_a_stopped_partition_delays_no_other_coroutine(
    make_cache, clean_redis_servers
):
    stalled, healthy = clean_redis_servers[:2]
    cache = make_cache([stalled.url, healthy.url], SOCKET_TIMEOUT=3)
    keys = [f"p:{i}" for i in range(40)]
    cache.set_many(dict.fromkeys(keys, 1))
    on_healthy = [key for key in keys if cache.partition_for(key) == healthy.url]
    others = [f"o{i}" for i in range(200) if cache.partition_for(f"o{i}") == healthy.url][:20]
    cache.set_many(dict.fromkeys(others, 2))

    async def scenario():
        await cache.aget(others[0])
        stalled.pause()
        try:
            hung = asyncio.ensure_future(cache.adelete_pattern("p:*"))
            await asyncio.sleep(0.05)
            values = await asyncio.gather(*[cache.aget(key) for key in others])
            return values, not hung.done(), await hung
        finally:
            stalled.resume()

    values, still_scanning, deleted = run(scenario())
    assert values == [2] * len(others) and still_scanning
    assert deleted == len(on_healthy)  # the stalled partition failed, the other was scanned
    assert cache.get_many(on_healthy) == {}


def test_alock__excludes_a_sync_holder_and_waits_without_holding_up_the_loop(any_cache):
    from redis.exceptions import LockError

    sync_lock = any_cache.lock("job", timeout=30, thread_local=False)
    assert sync_lock.acquire(blocking=False)

    async def scenario():
        waiting = asyncio.ensure_future(any_cache.alock("job", timeout=30).acquire())
        ticks = 0
        while not waiting.done() and ticks < 5:  # the loop runs while it waits
            await asyncio.sleep(0.02)
            ticks += 1
        still_waiting = not waiting.done()
        await asyncio.to_thread(sync_lock.release)
        assert await waiting is True
        with pytest.raises(LockError):
            async with any_cache.alock("job", timeout=30, blocking_timeout=0.1):
                pass
        return still_waiting

    assert run(scenario()) is True
    assert sync_lock.acquire(blocking=False) is False  # the alock() still holds it


def test_alock__as_an_async_context_manager(any_cache):
    async def scenario():
        lock = any_cache.alock("job", timeout=30)
        async with lock:
            held = await lock.locked(), await lock.owned()
        return held, await lock.locked()

    assert run(scenario()) == ((True, True), False)


# -- the ORM helpers and cached() --


@pytest.mark.django_db(transaction=True)
def test_async_orm_helpers__cache_reads_on_the_loop_queries_in_a_thread():
    from django.core.cache import cache

    import django_tiercache
    from django_tiercache.orm.cache_aside import ABSENT, object_key
    from tests.testapp.models import Product

    cache.clear()
    product = Product.objects.create(name="a", version=1)

    async def scenario():
        first = await django_tiercache.aget_object(Product, product.pk)
        again = await django_tiercache.aget_object(Product, product.pk)
        found = await django_tiercache.aget_objects(Product, [product.pk, 10**6])
        by_404 = await django_tiercache.aget_object_or_404(Product, pk=product.pk)
        rows = await django_tiercache.acached_queryset(Product.objects.filter(name="a"))
        return first, again, found, by_404, rows

    first, again, found, by_404, rows = run(scenario())
    # What the misses loaded (in a thread: the ORM refuses the loop) is cached.
    assert cache.get(object_key(Product, product.pk)) == product
    assert cache.get(object_key(Product, 10**6)) is ABSENT
    assert first == again == by_404 == product
    assert found == {product.pk: product}
    assert rows == [product]


def test_cached__on_an_async_function_awaits_it_once_for_concurrent_callers(settings):
    from django_tiercache import cached

    calls = []

    @cached(timeout=60)
    async def price(item: int) -> int:
        calls.append(item)
        await asyncio.sleep(0.1)
        return item * 2

    async def scenario():
        price.invalidate(3)
        return await asyncio.gather(*[price(3) for _ in range(10)])

    assert run(scenario()) == [6] * 10
    assert calls == [3]


def test_more_coroutines_than_connections__wait_for_one_and_all_answer(
    make_cache, shared_redis_url
):
    cache = make_cache(shared_redis_url, CONNECTION_POOL_KWARGS={"max_connections": 2})
    cache.set("k", "v")

    async def scenario():
        return await asyncio.gather(*[cache.aget("k") for _ in range(50)])

    assert run(scenario()) == ["v"] * 50
    assert cache._policy.counts == {}  # nobody gave up waiting


# -- the bridge (storage/bridge.py) --


def test_bridge__serves_call_after_call_on_one_parked_greenlet_even_after_a_failure():
    import greenlet

    from django_tiercache.storage import bridge

    def where(fail=False):
        bridge.await_only(asyncio.sleep(0))
        if fail:
            raise KeyError("boom")
        return greenlet.getcurrent()

    async def scenario():
        first = await bridge.run(where)
        with pytest.raises(KeyError):
            await bridge.run(where, fail=True)
        return first, await bridge.run(where)

    first, again = run(scenario())
    assert first is again and not first.dead


def test_bridge__a_parked_greenlet_keeps_nothing_of_its_last_call():
    import gc
    import weakref

    from django_tiercache.storage import bridge

    class Value:
        pass

    made = []

    def call(arg):
        made.append(Value())
        return made[-1]

    async def scenario(sent):
        await bridge.run(call, sent)

    sent = Value()
    run(scenario(sent))
    refs = [weakref.ref(sent), weakref.ref(made.pop())]
    del sent
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_waiting_for_a_connection__cancelled_or_given_up_leaves_the_pool_whole(
    make_cache, clean_redis_servers
):
    server = clean_redis_servers[0]
    cache = make_cache(
        server.url,
        SOCKET_TIMEOUT=0.5,
        BREAKER_COOLDOWN=0.1,  # the held call's timeout opens the breaker: for moments
        CONNECTION_POOL_KWARGS={"max_connections": 1},
    )
    cache.set("k", "v")
    store = cache._partitions[0].store

    async def scenario():
        await cache.aget("k")
        server.pause()
        try:
            holder = asyncio.ensure_future(cache.aget("k"))  # holds the one connection
            await asyncio.sleep(0.05)
            cancelled = asyncio.ensure_future(cache.aget("k"))  # waits for it
            gives_up = asyncio.ensure_future(cache.aget("k"))  # waits, then gives up
            await asyncio.sleep(0.05)
            cancelled.cancel()
            outcomes = await asyncio.gather(holder, cancelled, gives_up, return_exceptions=True)
        finally:
            server.resume()
        pool = store.loop_pool()
        await asyncio.sleep(0.2)
        return outcomes, await cache.aget("k"), pool.made

    (held, cancelled, gave_up), after, made = run(scenario())
    assert held is None and gave_up is None  # a socket timeout, a wait given up: misses
    assert isinstance(cancelled, asyncio.CancelledError)
    assert after == "v" and made == 1
