"""Write-behind you can trust, measured: read-your-writes under a drain, and a hung journal.

Run from the repository root (PostgreSQL and Redis answering):

    python benchmarks/bench_write_behind_trust.py [--reads N] [--processes N]
        [--database-url postgres://postgres@127.0.0.1:5432/test]

1. Read-your-writes: ``--processes`` processes (default 4) each own 20 rows of
   tests.testapp's Counter. Each loops: ``write_behind.save`` a higher count of
   one of its rows, then read rows back with ``get_object`` (4 reads per save);
   a read is stale if it shows a count below the last one this process saved
   for that row before the read began. One more process drains the journal all
   the while. ``--reads`` reads in all (default 1,000,000). Prints reads, stale
   reads (target 0), saves, and reads/s.
2. A hung journal: the journal on a redis-server of its own, stopped with
   SIGSTOP; 20 saves with SOCKET_TIMEOUT 0.5 s. Prints the time of each of the
   first three saves and the median of the rest (target: one timeout, then no
   more than a direct save, for BREAKER_COOLDOWN).

Makes the Counter table in the database the URL names and drops it at the end;
the journal and cache use Redis database 14 under a prefix of their own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

REDIS_URL = "redis://127.0.0.1:6379/14"
PREFIX = f"bench-wb-trust-{os.getpid()}"
ROWS_PER_PROCESS = 20


def configure(database_url: str, journal_url: str | None = None, socket_timeout=None) -> None:
    import django
    from django.conf import settings

    from tests.settings import database_from_url

    write_behind = {"KEY_PREFIX": PREFIX, "TRIGGER": False, "BATCH_SIZE": 200}
    if journal_url:
        write_behind |= {"REDIS_URL": journal_url, "SOCKET_TIMEOUT": socket_timeout}
    settings.configure(
        SECRET_KEY="bench-only",  # noqa: S106
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_tiercache",
            "tests.testapp",
        ],
        DATABASES={"default": database_from_url(database_url)},
        CACHES={
            "default": {
                "BACKEND": "django_tiercache.backend.TierCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": PREFIX,
            }
        },
        TIERCACHE={"STATS": False, "WRITE_BEHIND": write_behind},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def reader(database_url: str, pks: list[int], reads: int, results) -> None:
    configure(database_url)
    from django_tiercache import get_object, write_behind
    from tests.testapp.models import Counter

    rng = random.Random(pks[0])
    saved = {pk: 0 for pk in pks}
    rows = {pk: Counter.objects.get(pk=pk) for pk in pks}
    stale = saves = 0
    for i in range(reads):
        if i % 4 == 0:
            pk = rng.choice(pks)
            saved[pk] += 1
            rows[pk].hits = saved[pk]
            write_behind.save(rows[pk], update_fields=["hits"])
            saves += 1
        pk = rng.choice(pks)
        floor = saved[pk]
        if get_object(Counter, pk).hits < floor:
            stale += 1
    results.put((stale, saves))


def drainer(database_url: str, stop) -> None:
    configure(database_url)
    from django_tiercache.write_behind.drain import drain

    while not stop.is_set():
        drain()
        time.sleep(0.005)


def read_your_writes(database_url: str, processes: int, reads: int) -> None:
    from django.db import connection

    from tests.testapp.models import Counter

    rows = Counter.objects.bulk_create(
        [Counter(name=f"ryw-{i}") for i in range(processes * ROWS_PER_PROCESS)]
    )
    pks = [row.pk for row in rows]
    connection.close()
    spawn = multiprocessing.get_context("spawn")
    results, stop = spawn.Queue(), spawn.Event()
    drain = spawn.Process(target=drainer, args=(database_url, stop))
    drain.start()
    each = reads // processes
    workers = [
        spawn.Process(
            target=reader,
            args=(
                database_url,
                pks[n * ROWS_PER_PROCESS : (n + 1) * ROWS_PER_PROCESS],
                each,
                results,
            ),
        )
        for n in range(processes)
    ]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=3600) for _ in workers]
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    stop.set()
    drain.join(30)
    stale = sum(s for s, _ in outcomes)
    saves = sum(n for _, n in outcomes)
    print(f"read-your-writes, {processes} processes and a drain running")
    print(f"  reads                 {each * processes:12,}")
    print(f"  stale reads           {stale:12,}   (target 0)")
    print(f"  saves                 {saves:12,}")
    print(f"  reads per second      {each * processes / elapsed:12,.0f}")


def hung_journal(database_url: str) -> None:
    """In a process of its own: settings name the journal's server."""
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="bench-wb-hung-")
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout:
                break
            time.sleep(0.05)
        spawn = multiprocessing.get_context("spawn")
        probe = spawn.Process(target=_hung_saves, args=(database_url, port, server.pid))
        probe.start()
        probe.join(120)
    finally:
        os.kill(server.pid, 18)  # SIGCONT, then stop it
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def _hung_saves(database_url: str, port: int, pid: int) -> None:
    configure(database_url, f"redis://127.0.0.1:{port}/0", socket_timeout=0.5)
    from django_tiercache import write_behind
    from tests.testapp.models import Counter

    row = Counter.objects.create(name=f"hung-{port}")
    os.kill(pid, 19)  # SIGSTOP: the journal accepts connections and never answers
    timings = []
    for n in range(20):
        row.hits = n
        started = time.perf_counter()
        write_behind.save(row, update_fields=["hits"])
        timings.append(time.perf_counter() - started)
    print("hung journal (SIGSTOP), SOCKET_TIMEOUT 0.5 s, 20 saves")
    for n, seconds in enumerate(timings[:3], 1):
        print(f"  save {n}                {seconds * 1000:10.1f} ms")
    print(f"  saves 4-20 median     {statistics.median(timings[3:]) * 1000:10.1f} ms")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()
    configure(args.database_url)
    import redis
    from django.db import connection

    from tests.testapp.models import Counter

    with connection.schema_editor() as editor:
        editor.create_model(Counter)
    try:
        read_your_writes(args.database_url, args.processes, args.reads)
        hung_journal(args.database_url)
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Counter)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"*{PREFIX}*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
