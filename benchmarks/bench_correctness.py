"""Stale reads per 1,000 and hit ratio on the ORM-cache correctness cases, beside the field.

    python benchmarks/bench_correctness.py [--trials N] [--systems tiercache,cachalot,cacheops]

Each system runs in a process of its own on PostgreSQL ("tiercache_bench_corr",
created if missing) and Redis db 11, reading one row model (benchmarks/corrapp)
the way its users do: ``get_object`` (django_tiercache), a plain ``.get()``
(django-cachalot, which caches every query), ``.cache().get()`` (django-cacheops).
django-cachalot and django-cacheops are installed into the venv when missing.
Every system runs twice: with Redis direct, and through a loopback proxy that
adds 250 µs to every round trip (125 µs each way), which widens the races.

Cases (``--trials`` each, default 1,000):

- autocommit: a writer thread commits ``--trials`` new versions of a row while a
  reader thread reads it; a read is stale if it shows a version older than one
  committed before the read began; "left" counts a stale entry still served
  after the writer stopped;
- on_commit: an ``on_commit`` hook (registered before the save) reads the row;
- raw UPDATE: ``cursor.execute("UPDATE ...")``, then a read;
- DB cascade: a parent deleted, its item gone by ``ON DELETE CASCADE``; a read
  that still returns the item is stale;
- REPEATABLE READ: a reader whose snapshot predates a write misses after it;
  then a plain read is stale if it returns the reader's old snapshot.

Prints stale per 1,000 per case and the hit ratio of all reads, per system and delay.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "tiercache_bench_corr"
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 11
SYSTEMS = ("tiercache", "cachalot", "cacheops")
CASES = ("autocommit", "left", "on_commit", "raw UPDATE", "DB cascade", "REPEATABLE READ")


# -- the delay proxy --


def delay_proxy(delay_s: float) -> int:
    """A loopback TCP proxy to Redis adding `delay_s` each way; returns its port."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                time.sleep(delay_s)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(REDIS)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return port


# -- one system, in its own process --


def configure(system: str, redis_url: str) -> None:
    import django
    from django.conf import settings

    from tests.settings import database_from_url

    apps = ["django.contrib.contenttypes", "django.contrib.auth", "benchmarks.corrapp"]
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}
    extra: dict = {}
    if system == "tiercache":
        apps.append("django_tiercache")
        cache = {"BACKEND": "django_tiercache.backend.TierCache", "LOCATION": redis_url}
        extra["TIERCACHE"] = {"STATS": False}
    elif system == "cachalot":
        apps.append("cachalot")
        extra["CACHALOT_ONLY_CACHABLE_TABLES"] = ["corrapp_item", "corrapp_parent"]
    else:
        apps.append("cacheops")
        extra["CACHEOPS_REDIS"] = redis_url
        extra["CACHEOPS"] = {"corrapp.*": {"ops": "get", "timeout": 300}}
    settings.configure(
        SECRET_KEY="bench-only",  # noqa: S106
        INSTALLED_APPS=apps,
        DATABASES={"default": database_from_url(f"postgres://postgres@127.0.0.1:5432/{DATABASE}")},
        CACHES={"default": {**cache, "KEY_PREFIX": f"corr-{system}-{os.getpid()}"}},
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        **extra,
    )
    django.setup()


def reader_for(system: str):
    from benchmarks.corrapp.models import Item

    if system == "tiercache":
        import django_tiercache

        django_tiercache.register(Item)
        return lambda pk: django_tiercache.get_object(Item, pk)
    if system == "cacheops":
        return lambda pk: Item.objects.cache().get(pk=pk)
    return lambda pk: Item.objects.get(pk=pk)


class Counted:
    """Reads, and those that ran no query (hits)."""

    def __init__(self, read):
        self.read, self.reads, self.hits = read, 0, 0

    def __call__(self, pk):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as queries:
            try:
                found = self.read(pk)
            finally:
                self.reads += 1
        if not queries.captured_queries:
            self.hits += 1
        return found


def worker(system: str, redis_url: str, trials: int) -> dict:
    configure(system, redis_url)
    from django.core.cache import cache
    from django.db import connection

    from benchmarks.corrapp.models import Item, Parent

    with connection.schema_editor() as editor:
        editor.create_model(Parent)
        editor.create_model(Item)
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE corrapp_item ADD FOREIGN KEY (parent_id) REFERENCES corrapp_parent (id) "
            "ON DELETE CASCADE"
        )
    read = Counted(reader_for(system))
    try:
        cache.clear()
        stale = {
            "autocommit": autocommit_race(read, trials),
            "on_commit": on_commit(read, trials),
            "raw UPDATE": raw_update(read, trials),
            "DB cascade": db_cascade(read, trials),
            "REPEATABLE READ": repeatable_read(read, min(trials, 200)),
        }
        stale["left"] = stale["autocommit"].pop("left")
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Item)
            editor.delete_model(Parent)
        cache.clear()
    return {"stale": stale, "reads": read.reads, "hits": read.hits}


def autocommit_race(read, trials: int) -> dict:
    from django.db import connections

    from benchmarks.corrapp.models import Item

    item = Item.objects.create(version=0)
    committed, done = [0], threading.Event()

    def write():
        row = Item.objects.get(pk=item.pk)
        for version in range(1, trials + 1):
            row.version = version
            row.save(update_fields=["version"])
            committed[0] = version
        done.set()
        connections.close_all()

    writer = threading.Thread(target=write)
    writer.start()
    stale = reads = 0
    while not done.is_set():
        floor = committed[0]
        stale += read(item.pk).version < floor
        reads += 1
    writer.join()
    time.sleep(0.05)
    return {
        "stale": stale,
        "reads": reads,
        "left": {"stale": int(read(item.pk).version != trials), "reads": 1},
    }


def on_commit(read, trials: int) -> dict:
    from django.db import transaction

    from benchmarks.corrapp.models import Item

    item = Item.objects.create(version=0)
    read(item.pk)
    stale = 0
    for version in range(1, trials + 1):
        seen: list[int] = []
        with transaction.atomic():
            transaction.on_commit(lambda seen=seen: seen.append(read(item.pk).version))
            item.version = version
            item.save(update_fields=["version"])
        stale += seen != [version]
    return {"stale": stale, "reads": trials}


def raw_update(read, trials: int) -> dict:
    from django.db import connection

    from benchmarks.corrapp.models import Item

    item = Item.objects.create(version=0)
    stale = 0
    for version in range(1, trials + 1):
        read(item.pk)
        with connection.cursor() as cursor:
            cursor.execute("UPDATE corrapp_item SET version = %s WHERE id = %s", [version, item.pk])
        stale += read(item.pk).version != version
    return {"stale": stale, "reads": trials}


def db_cascade(read, trials: int) -> dict:
    from benchmarks.corrapp.models import Item, Parent

    stale = 0
    for _ in range(trials):
        parent = Parent.objects.create(name="p")
        item = Item.objects.create(parent=parent)
        read(item.pk)
        Parent.objects.filter(pk=parent.pk).delete()
        try:
            read(item.pk)
            stale += 1
        except Item.DoesNotExist:
            pass
    return {"stale": stale, "reads": trials}


def repeatable_read(read, trials: int) -> dict:
    from django.db import connection, connections, transaction

    from benchmarks.corrapp.models import Item

    stale = 0
    for _ in range(trials):
        item = Item.objects.create(version=0)
        snapshot, written, finished = threading.Event(), threading.Event(), threading.Event()

        def old_reader(pk=item.pk, snapshot=snapshot, written=written, finished=finished):
            try:
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    Item.objects.filter(pk=pk).count()  # the snapshot is taken
                    snapshot.set()
                    written.wait(10)
                    read(pk)
            finally:
                finished.set()
                connections.close_all()

        threading.Thread(target=old_reader).start()
        snapshot.wait(10)
        item.version = 1
        item.save(update_fields=["version"])
        written.set()
        finished.wait(10)
        stale += read(item.pk).version != 1
    return {"stale": stale, "reads": trials}


# -- the table --


def ensure_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            db.execute(f'CREATE DATABASE "{DATABASE}"')


def ensure_installed(system: str) -> None:
    module = {"cachalot": "cachalot", "cacheops": "cacheops"}.get(system)
    if module is None:
        return
    found = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    if found.returncode:
        package = {"cachalot": "django-cachalot", "cacheops": "django-cacheops"}[system]
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", package], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.redis_url, args.trials)))
        return
    ensure_database()
    ports = {0: REDIS[1], 250: delay_proxy(125e-6)}
    rows = []
    for system in args.systems.split(","):
        ensure_installed(system)
        for delay, port in ports.items():
            url = f"redis://127.0.0.1:{port}/{REDIS_DB}"
            command = [sys.executable, __file__, "--worker", system, "--redis-url", url]
            done = subprocess.run(
                [*command, "--trials", str(args.trials)], capture_output=True, text=True, cwd=ROOT
            )
            if done.returncode:
                print(f"{system} ({delay} µs): failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append((system, delay, json.loads(done.stdout.strip().splitlines()[-1])))
    header = f"{'system':10} {'added':>6} " + " ".join(f"{c:>15}" for c in CASES) + "  hit ratio"
    print(f"stale reads per 1,000 ({args.trials} trials per case; PostgreSQL, Redis 7, loopback)")
    print(header)
    for system, delay, result in rows:
        cells = []
        for case in CASES:
            figures = result["stale"][case]
            per_1000 = 1000 * figures["stale"] / max(1, figures["reads"])
            cells.append(f"{per_1000:15.1f}" if case != "left" else f"{figures['stale']:15d}")
        ratio = result["hits"] / max(1, result["reads"])
        print(f"{system:10} {delay:>4}µs " + " ".join(cells) + f"  {ratio:9.3f}")


if __name__ == "__main__":
    main()
