"""The hot path at the wire's cost: TierCache's per-call figures against django-redis'.

    python benchmarks/bench_hot_path.py [--rounds N] [--quick] [--no-saves]

Prints, for every operation, the wall time and the client's CPU time per call
(time.process_time), next to the floor: a raw redis-py GET of the same pickled
value plus pickle.loads. Then the ratios the project holds itself to, each
against its target. Samples of all operations are interleaved round by round,
so a burst of noise from other work on the machine falls on every row alike;
ratios are of medians. The load average is printed at the start and the end:
figures taken under load are not comparable with quiet ones. Last, where
the microseconds go (benchmarks/_where.py): each Function's time on the server
against the plain command, and the client's steps of one get.

Redis: three redis-server processes of its own on free ports (db 15): the
one-server caches use the first, the 3-partition cache all three. None is the
shared server at 127.0.0.1:6379, whose other clients would add their load to
the figures. PostgreSQL (the save figures): the database "tiercache_bench_hot",
created if missing; saves run in a child process with the test settings, on a
cache of the same three partitions.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from _servers import redis_servers  # noqa: E402
from _where import measure, print_where  # noqa: E402

DB = 15
ONE_SERVER_URL = ""  # the first of the benchmark's own servers (set by main)
DATABASE = "tiercache_bench_hot"
MANY = 100
TAGS = ["t1", "t2"]
from _sample import VALUE  # noqa: E402

# (label, numerator, denominator, target): ratios of median wall time per call.
TARGETS = [
    ("TierCache get, 2 tags / django-redis get", "tc.get", "djr.get", 1.0),
    ("TierCache get, untagged / django-redis get", "tc.get_untagged", "djr.get", 0.95),
    (
        "TierCache get_many(100), 3 partitions / django-redis get_many(100), 1 server",
        "tc3.get_many",
        "djr.get_many",
        1.0,
    ),
    ("TierCache set, 2 tags / django-redis set", "tc.set", "djr.set", 1.05),
    ("statistics on / off, TierCache get (2 tags)", "tc.get", "tc_nostats.get", 1.03),
    ("save() with invalidation / plain save(), autocommit", "save.tc", "save.plain", 1.3),
    (
        "save() with invalidation / plain save(), in a transaction",
        "save.tc_atomic",
        "save.plain_atomic",
        1.3,
    ),
]

# What the same saves cost on a cache of one partition (no target: each
# partition adds one lock call before the query and one release after it),
# and the wire's floor: a plain save with a PING to every partition awaited
# before its query and one sent after it, the least any lock taken before the
# query and released after it costs on this machine, Lua and Python aside.
ONE_PARTITION = [
    ("Function floor / django-redis set", "set_floor", "djr.set"),
    ("TierCache set, 2 tags / Function floor", "tc.set", "set_floor"),
    ("wire floor / plain save(), 3 partitions, autocommit", "save.floor", "save.plain"),
    ("save() with invalidation / wire floor, 3 partitions, autocommit", "save.tc", "save.floor"),
    (
        "wire floor / plain save(), 3 partitions, in a transaction",
        "save.floor_atomic",
        "save.plain_atomic",
    ),
    (
        "save() with invalidation / wire floor, 3 partitions, in a transaction",
        "save.tc_atomic",
        "save.floor_atomic",
    ),
    ("save() with invalidation / plain save(), 1 partition, autocommit", "save.tc1", "save.plain1"),
    (
        "save() with invalidation / plain save(), 1 partition, in a transaction",
        "save.tc_atomic1",
        "save.plain_atomic1",
    ),
]


class Row:
    def __init__(
        self, key: str, label: str, fn: Callable[[], Any] | None = None, around: Any = None
    ):
        self.key, self.label, self.fn = key, label, fn
        self.around = around or contextlib.nullcontext  # what each sample runs inside
        self.wall_us: list[float] = []
        self.cpu_us: list[float] = []
        self.calls = 1

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_us)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_us)


def sample(row: Row) -> None:
    fn, calls = row.fn, row.calls
    assert fn is not None
    gc.disable()
    try:
        with row.around():
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        gc.enable()
    row.wall_us.append(wall / calls * 1e6)
    row.cpu_us.append(cpu / calls * 1e6)


def interleaved(rows: list[Row], rounds: int, sample_ms: float) -> None:
    for row in rows:
        row.calls = 50
        sample(row)  # warm up, then size the samples
        row.calls = max(1, int(sample_ms * 1000 / row.wall_us.pop()))
        row.cpu_us.pop()
    for r in range(rounds):
        shift = r % len(rows)
        for row in rows[shift:] + rows[:shift]:
            sample(row)


# ---------------------------------------------------------------- the caches


def configure(extra_ports: list[int]) -> None:
    import django
    from django.conf import settings

    three = [ONE_SERVER_URL] + [f"redis://127.0.0.1:{port}/{DB}" for port in extra_ports]
    tier = {"BACKEND": "django_tiercache.backend.TierCache", "TIMEOUT": 600}
    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",  # noqa: S106
        USE_TZ=True,
        INSTALLED_APPS=[],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "djr": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": ONE_SERVER_URL,
                "KEY_PREFIX": "hot-djr",
                "TIMEOUT": 600,
            },
            "tc": {**tier, "LOCATION": ONE_SERVER_URL, "KEY_PREFIX": "hot-tc"},
            "tc3": {**tier, "LOCATION": three, "KEY_PREFIX": "hot-tc3"},
        },
    )
    django.setup()


@contextlib.contextmanager
def statistics_off(cache: Any) -> Any:
    """The cache as TIERCACHE["OBSERVERS"] = [] builds it: no observer, and partitions
    that report no call. The same instance, so that the same connections and objects
    serve both rows and the ratio is the statistics' cost alone (two instances
    differ by a few per cent on their own, more than the target allows)."""
    from django_tiercache.storage.observers import NULL

    kept = cache._observer, [p.observer for p in cache._partitions]
    cache._observer = NULL
    for partition in cache._partitions:
        partition.observer = None
    try:
        yield
    finally:
        cache._observer = kept[0]
        for partition, observer in zip(cache._partitions, kept[1], strict=True):
            partition.observer = observer


def _raw_get(raw: redis.Redis) -> Any:
    return pickle.loads(raw.get("hot-raw"))  # noqa: S301 - the benchmark's own bytes


# The least a tagged write can cost as a Redis Function: one that only SETs the value
# and announces the key (what every write must do atomically, lock checks and tags
# aside), called with a value pickled on the spot, on a raw redis-py connection.
SET_FLOOR_LIBRARY = """#!lua name=bench_set_floor
redis.register_function('bench_set_floor', function(keys, args)
  redis.call('SET', keys[1], args[1], 'PX', args[2])
  redis.call('PUBLISH', args[3], 'k' .. cjson.encode(keys))
  return {1}
end)"""


def _set_floor(raw: redis.Redis) -> Any:
    body = pickle.dumps(VALUE, pickle.HIGHEST_PROTOCOL)
    return raw.execute_command("FCALL", "bench_set_floor", 1, "hot-floor", body, 600_000, "hot-l1")


def read_rows() -> list[Row]:
    from django.core.cache import caches

    raw = redis.Redis.from_url(ONE_SERVER_URL)
    raw.set("hot-raw", pickle.dumps(VALUE, pickle.HIGHEST_PROTOCOL))
    raw.function_load(SET_FLOOR_LIBRARY, replace=True)
    djr, tc, tc3 = caches["djr"], caches["tc"], caches["tc3"]
    many = {f"many:{i}": VALUE for i in range(MANY)}
    djr.set("k", VALUE)
    djr.set_many(many)
    tc.set("k", VALUE, tags=TAGS)
    tc.set("plain", VALUE)
    tc3.set_many(many, tags=TAGS)
    rows = [
        Row("floor", "floor: redis-py GET + pickle.loads", partial(_raw_get, raw)),
        Row("djr.get", "django-redis get", partial(djr.get, "k")),
        Row("tc.get", "TierCache get, 2 tags", partial(tc.get, "k")),
        Row("tc.get_untagged", "TierCache get, untagged", partial(tc.get, "plain")),
        Row(
            "tc_nostats.get",
            "TierCache get, 2 tags, statistics off",
            partial(tc.get, "k"),
            partial(statistics_off, tc),
        ),
        Row("djr.get_many", "django-redis get_many(100), 1 server", partial(djr.get_many, many)),
        Row(
            "tc3.get_many",
            "TierCache get_many(100), 2 tags, 3 partitions",
            partial(tc3.get_many, many),
        ),
        Row("djr.set", "django-redis set", partial(djr.set, "k", VALUE)),
        Row("tc.set", "TierCache set, 2 tags", partial(tc.set, "k", VALUE, tags=TAGS)),
        Row(
            "set_floor",
            "Function floor: pickle.dumps + an FCALL that only SETs and announces",
            partial(_set_floor, raw),
        ),
    ]
    for row, expected in (
        (rows[1], VALUE),
        (rows[2], VALUE),
        (rows[3], VALUE),
        (rows[4], VALUE),
        (rows[5], many),
        (rows[6], many),
    ):
        assert row.fn is not None and row.fn() == expected, f"{row.label}: not a hit"
    (recorder,) = tc._observers
    counted = recorder.totals()
    with statistics_off(tc):
        tc.get("k")
    assert recorder.totals() == counted, "statistics are still on"
    tc.get("k")
    assert recorder.totals() != counted, "statistics are off for good"
    return rows


# ---------------------------------------------------------------- saves


def ensure_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            db.execute(f'CREATE DATABASE "{DATABASE}"')


def time_saves(rounds: int, saves: int) -> dict[str, list[list[float]]]:
    """In the child: [wall µs, cpu µs] per save of one Product row, with the
    model's invalidation connected and disconnected, interleaved round by round."""
    from django.core.management import call_command
    from django.db import transaction

    from django_tiercache.orm import invalidation
    from tests.testapp.models import Product

    call_command("migrate", run_syncdb=True, verbosity=0)
    Product.objects.filter(name__startswith="hot-").delete()
    row = Product.objects.create(name=f"hot-{os.getpid()}")

    def saves_of(atomic: bool) -> None:
        for i in range(saves):
            row.version = i  # a column, not what the row's tags are made of
            if atomic:
                with transaction.atomic():
                    row.save()
            else:
                row.save()

    out: dict[str, list[list[float]]] = {}
    plan = [("plain", False), ("tc", True), ("floor", False)]
    floor = WireFloor(Product)
    for atomic in (False, True):
        for name, _ in plan:
            out[name + ("_atomic" if atomic else "")] = []
        for r in range(rounds):
            for name, connected in plan[r % 3 :] + plan[: r % 3]:
                (invalidation.connect if connected else invalidation.disconnect)(Product)
                floor.on = name == "floor"
                cpu, wall = time.process_time(), time.perf_counter()
                saves_of(atomic)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                key = name + ("_atomic" if atomic else "")
                out[key].append([wall / saves * 1e6, cpu / saves * 1e6])
    invalidation.connect(Product)
    return out


class WireFloor:
    """What a save costs the wire when a lock before its query and a release after
    it are nothing but a round trip: a PING to every partition, sent at pre_save
    and awaited just before the query (in a transaction: after it, before the
    commit), and another sent at post_save (its reply read at the next save). Raw
    redis-py connections, none of TierCache's code."""

    def __init__(self, model: Any):
        from django.conf import settings
        from django.db import connection
        from django.db.models.signals import post_save, pre_save

        location = settings.CACHES["default"]["LOCATION"]
        urls = [location] if isinstance(location, str) else location
        clients = [redis.Redis.from_url(url) for url in urls]
        self.locks = [c.connection_pool.get_connection() for c in clients]
        self.releases = [c.connection_pool.get_connection() for c in clients]
        self.on, self.sent, self.owed = False, False, False
        pre_save.connect(self.before, sender=model, weak=False)
        post_save.connect(self.after, sender=model, weak=False)
        connection.execute_wrappers.append(self.confirm)

    def before(self, **kwargs: Any) -> None:
        if self.on:
            for conn in self.locks:
                conn.send_command("PING")
            self.sent = True

    def confirm(self, execute: Any, sql: Any, params: Any, many: Any, context: Any) -> Any:
        from django.db import connection

        if self.sent and not connection.in_atomic_block:  # autocommit: before the query
            self.read_locks()
        return execute(sql, params, many, context)

    def read_locks(self) -> None:
        for conn in self.locks:
            conn.read_response()
        self.sent = False

    def after(self, **kwargs: Any) -> None:
        if self.sent:  # in a transaction: after the query, before the commit
            self.read_locks()
        if self.on:
            for conn in self.releases:
                if self.owed:
                    conn.read_response()
                conn.send_command("PING")
            self.owed = True


def save_rows(extra_ports: list[int], rounds: int, saves: int) -> list[Row]:
    """The saves on the 3-partition cache (the targets), then on one partition
    (what each further partition adds)."""
    ensure_database()
    three = [ONE_SERVER_URL] + [f"redis://127.0.0.1:{port}/{DB}" for port in extra_ports]
    rows = _save_rows(three, rounds, saves, "")
    one = _save_rows([three[1]], rounds, saves, "1")
    return rows + one


def _save_rows(location: list[str], rounds: int, saves: int, suffix: str) -> list[Row]:
    cache = {
        "BACKEND": "django_tiercache.backend.TierCache",
        "LOCATION": location,
        "KEY_PREFIX": "hot-saves",
    }
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        "TIERCACHE_TEST_REDIS_URL": ONE_SERVER_URL,
        "TIERCACHE_TEST_CACHE": json.dumps(cache),
    }
    code = (
        "import django, json; django.setup();"
        "from benchmarks.bench_hot_path import time_saves;"
        f"print(json.dumps(time_saves({rounds}, {saves})))"
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    n = len(location)
    partitions = f"{n} partition{'s' if n > 1 else ''}"
    labels = {
        "plain": "save(), model not cached (invalidation disconnected), autocommit",
        "tc": f"save() with invalidation, {partitions}, autocommit",
        "floor": f"wire floor: plain save() + a PING before and after, {partitions}, autocommit",
        "plain_atomic": "save(), model not cached, in transaction.atomic()",
        "tc_atomic": f"save() with invalidation, {partitions}, in transaction.atomic()",
        "floor_atomic": f"wire floor, {partitions}, in transaction.atomic()",
    }
    rows = []
    for key, label in labels.items():
        row = Row(f"save.{key}{suffix}", label + (" (1-partition run)" if suffix else ""))
        row.wall_us = [w for w, _ in figures[key]]
        row.cpu_us = [c for _, c in figures[key]]
        rows.append(row)
    return rows


# ---------------------------------------------------------------- report


def flush(ports: list[int]) -> None:
    """FLUSHDB db 15 on the benchmark's own servers."""
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port, db=DB)
        try:
            client.flushdb()
        finally:
            client.close()


def print_rows(rows: list[Row], floor: Row | None) -> None:
    width = max(len(r.label) for r in rows)
    print(f"{'operation':<{width}} | {'wall µs':>8} | {'CPU µs':>8} | {'CPU - floor':>11}")
    print(f"{'-' * width}-+-{'-' * 8}-+-{'-' * 8}-+-{'-' * 11}")
    for r in rows:
        extra = f"{r.cpu - floor.cpu:>11.1f}" if floor and not r.key.startswith("save") else ""
        print(f"{r.label:<{width}} | {r.wall:>8.1f} | {r.cpu:>8.1f} | {extra:>11}")
    print()


def print_targets(by_key: dict[str, Row]) -> None:
    print("targets (ratio of median wall times; the CPU ratio beside it)")
    for label, num, den, target in TARGETS:
        if num not in by_key or den not in by_key:
            print(f"  [n/a ] {label}: not measured (target <= {target})")
            continue
        ratio = by_key[num].wall / by_key[den].wall
        cpu = by_key[num].cpu / by_key[den].cpu
        status = "PASS" if ratio <= target else "MISS"
        print(f"  [{status}] {label}: {ratio:.2f} (target <= {target}; CPU {cpu:.2f})")
    for label, num, den in ONE_PARTITION:
        if num in by_key and den in by_key:
            ratio, cpu = by_key[num].wall / by_key[den].wall, by_key[num].cpu / by_key[den].cpu
            print(f"  [info] {label}: {ratio:.2f} (CPU {cpu:.2f})")
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="samples per operation (default 30)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    parser.add_argument("--no-saves", action="store_true", help="skip the PostgreSQL saves")
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 30)
    sample_ms = 10 if args.quick else 25
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"django_tiercache hot path; {os.cpu_count()} CPUs; load average at start: {load}")
    print(f"  {rounds} interleaved samples per operation of ~{sample_ms} ms; medians")
    global ONE_SERVER_URL
    with redis_servers(3) as servers:
        ONE_SERVER_URL, ports = f"redis://127.0.0.1:{servers[0]}/{DB}", servers[1:]
        configure(ports)
        flush(servers)
        try:
            rows = read_rows()
            interleaved(rows, rounds, sample_ms)
            if not args.no_saves:
                rows += save_rows(ports, rounds=max(6, rounds // 3), saves=100)
            from django.core.cache import caches

            body = caches["tc"]._codec.encode("where", VALUE)
            where = measure(ports[0], body, caches["tc"], "k")
        finally:
            flush(servers)
    by_key = {r.key: r for r in rows}
    floor = by_key["floor"]
    print(f"  floor (raw GET + unpickle): {floor.wall:.1f} µs wall, {floor.cpu:.1f} µs CPU\n")
    print_rows(rows, floor)
    print_targets(by_key)
    print_where(where)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average at end: {load}")


if __name__ == "__main__":
    main()
