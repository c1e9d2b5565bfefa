"""A separate OS process holding a TierCache with L1, driven line by line over stdin.

Each request is one JSON line ``[op, *args]``; each answer one JSON line. The
L1 coherence tests run readers (and writers) here so that invalidations cross
real process boundaries.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django_tiercache.backend import TierCache

    cache: TierCache | None = None
    for line in sys.stdin:
        op, *args = json.loads(line)
        if op == "build":
            location, prefix, options = args
            cache = TierCache(location, {"KEY_PREFIX": prefix, "TIMEOUT": 300, "OPTIONS": options})
            answer = True
        else:
            answer = OPS[op](cache, *args)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def _wait(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _kept(cache, key: str) -> bool:
    """get() and say whether L1 now holds a copy (a fill is dropped while the
    message of the write that made the value may still be on its way)."""
    cache.get(key)
    return cache.make_key(key) in cache._l1.entries


def _heard(cache, key: str) -> bool:
    """Has a change to `key` been heard on its partition's channel?"""
    slot = cache._l1.slots[cache._slot_of[cache._partition(cache.make_key(key))]]
    with cache._l1.lock:
        return any(kind == "k" and cache.make_key(key) in items for _, kind, items in slot.log)


def _get_when_flagged(cache, key: str, path: str):
    """Hold the GIL (no thread switch) while waiting for the file's first byte to
    be set, then get(key): this process's subscriber thread cannot run meanwhile,
    so a message that reached its socket is still unapplied, as when a busy
    request thread keeps it waiting. The second byte says the wait has begun."""
    import mmap

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 2) as flags:
        try:
            flags[1] = 1
            while flags[0] == 0:
                pass
            return cache.get(key)
        finally:
            sys.setswitchinterval(switch)


def _single_flight(cache, key: str, threads: int, counter_url: str, counter: str) -> list:
    import redis

    counter_client = redis.Redis.from_url(counter_url)
    results: list = []
    barrier = threading.Barrier(threads)

    def load():
        counter_client.incr(counter)  # counted in Redis: the test sums every process
        time.sleep(0.2)  # a slow loader: the others arrive while it runs
        return {"computed by": os.getpid()}

    def call():
        barrier.wait()
        results.append(cache.get_or_set(key, load, 60))

    pool = [threading.Thread(target=call) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


def _hang_loading(cache, key: str, counter_url: str, counter: str) -> None:
    """get_or_set() with a loader that counts itself and never returns (to be killed)."""
    import redis

    counter_client = redis.Redis.from_url(counter_url)

    def load():
        counter_client.incr(counter)
        time.sleep(3600)

    cache.get_or_set(key, load, 60)


def _get_object_flight(cache, threads: int, pk: int, counter_url: str, counter: str) -> list:
    """get_object(Shelf, pk) from `threads` threads at once; every query on the
    shelf table is counted in Redis (and made slow, so that the others arrive
    while it runs)."""
    import redis
    from django.db import connection

    from django_tiercache import get_object
    from tests.testapp.models import Shelf

    counter_client = redis.Redis.from_url(counter_url)
    names: list = []
    barrier = threading.Barrier(threads)

    def count(execute, sql, params, many, context):
        if Shelf._meta.db_table in sql:
            counter_client.incr(counter)
            time.sleep(0.2)
        return execute(sql, params, many, context)

    def call():
        try:
            with connection.execute_wrapper(count):
                barrier.wait()
                names.append(get_object(Shelf, pk).name)
        finally:
            connection.close()

    _run_threads(call, threads)
    return names


def _create_shelf(cache, pk: int, name: str) -> bool:
    from django.db import connection

    from tests.testapp.models import Shelf

    with connection.schema_editor() as editor:
        editor.create_model(Shelf)
    Shelf.objects.create(pk=pk, name=name)
    return True


def _cached_flight(cache, callers: int, counter_url: str, counter: str) -> list:
    """`callers` concurrent calls of an async cached function on one event loop."""
    import asyncio

    from tests import cached_functions

    async def everyone():
        calls = [cached_functions.slow_report(counter_url, counter) for _ in range(callers)]
        return await asyncio.gather(*calls)

    return asyncio.run(everyone())


def _run_threads(target, threads: int) -> None:
    pool = [threading.Thread(target=target) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def _cached_key(*args) -> str:
    import datetime
    import decimal

    from tests import cached_functions

    sku, amount, options, shop_id, since = args
    return [
        cached_functions.price.cache_key(sku, decimal.Decimal(amount), options),
        cached_functions.best_sellers.cache_key(shop_id, datetime.date.fromisoformat(since)),
    ]


OPS = {
    "get": lambda cache, key: cache.get(key),
    "set": lambda cache, key, value, tags: cache.set(key, value, tags=tags),
    "get_or_set": lambda cache, key, value, tags: cache.get_or_set(key, value, tags=tags),
    "delete": lambda cache, key: cache.delete(key),
    "invalidate": lambda cache, *tags: cache.invalidate_tags(*tags),
    "live": lambda cache: _wait(
        lambda: cache._l1 is None or cache.get("warm-up") or all(s.live for s in cache._l1.slots)
    ),
    "in_l1": lambda cache, key: _wait(lambda: _kept(cache, key)),
    "in_l1_now": lambda cache, key: cache.make_key(key) in cache._l1.entries,
    "is_live": lambda cache: all(s.live for s in cache._l1.slots),
    "wait_heard": lambda cache, key: _wait(lambda: _heard(cache, key)),
    "wait_gone": lambda cache, key: _wait(lambda: cache.make_key(key) not in cache._l1.entries),
    "get_when_flagged": _get_when_flagged,
    "single_flight": _single_flight,
    "hang_loading": _hang_loading,
    "get_object_flight": _get_object_flight,
    "create_shelf": _create_shelf,
    "cached_flight": _cached_flight,
    "pid": lambda cache: os.getpid(),
    "cached_key": lambda cache, *args: _cached_key(*args),
}

if __name__ == "__main__":
    main()
