"""Stale reads per 1,000 and hit ratio on the ORM-cache correctness cases, beside the field.

    python benchmarks/bench_correctness.py [--trials N] [--systems tiercache,cachalot,cacheops]
        [--redis-port 6379] [--broker amqp://guest:guest@127.0.0.1:5672//]

Each system runs in a process of its own on PostgreSQL ("tiercache_bench_corr"
and "tiercache_bench_corr_other", created if missing) and Redis db 11 on loopback
(``--redis-port``), reading one row model (benchmarks/corrapp) the way its users
do: ``get_object`` (django_tiercache), a plain ``.get()`` (django-cachalot, which
caches every query), ``.cache().get()`` (django-cacheops).
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
  then a plain read is stale if it returns the reader's old snapshot;
- Celery: an ``on_commit`` hook sends a Celery task (RabbitMQ, ``--broker``; a
  worker thread) that reads the row; "-" when no broker answers;
- Now(): ``update(updated=Now())``, every other time on rows a subquery picks,
  then a read, stale if its ``updated`` is not the database's;
- second DB: the row routed to another database ("tiercache_bench_corr_other"),
  saved there in autocommit or in ``atomic(using=...)`` with an ``on_commit`` hook
  reading it;
- lagging replica: the row written on the primary and read from a replica (that
  second database) which receives each write only after one read, copied behind
  Django's back as replication is; a read after it caught up is stale if it still
  returns the older row. The router (benchmarks/corrapp/routers.py) sends reads
  carrying django_tiercache's load hint (``tiercache_load``) to the primary.

The cases are in benchmarks/corrapp/cases.py.

Prints stale per 1,000 per case and the hit ratio of all reads, per system and delay.
"""

from __future__ import annotations

import argparse
import contextlib
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
CASES = (
    "autocommit",
    "left",
    "on_commit",
    "Celery",
    "Now()",
    "raw UPDATE",
    "DB cascade",
    "REPEATABLE READ",
    "second DB",
    "lagging replica",
)
BROKER = "amqp://guest:guest@127.0.0.1:5672//"


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


def databases() -> dict:
    from tests.settings import database_from_url

    url = "postgres://postgres@127.0.0.1:5432/"
    return {
        "default": database_from_url(url + DATABASE),
        "other": database_from_url(url + f"{DATABASE}_other"),
    }


def configure(system: str, redis_url: str) -> None:
    import django
    from django.conf import settings

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
        DATABASES=databases(),
        DATABASE_ROUTERS=["benchmarks.corrapp.routers.ItemRouter"],
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
        from django.db import connections
        from django.test.utils import CaptureQueriesContext

        with contextlib.ExitStack() as stack:
            queries = [
                stack.enter_context(CaptureQueriesContext(connections[alias]))
                for alias in ("default", "other")
            ]
            try:
                found = self.read(pk)
            finally:
                self.reads += 1
        if not any(q.captured_queries for q in queries):
            self.hits += 1
        return found


def worker(system: str, redis_url: str, trials: int, broker: str) -> dict:
    configure(system, redis_url)
    from django.core.cache import cache
    from django.db import connections

    from benchmarks.corrapp import cases
    from benchmarks.corrapp.models import Item, Parent

    for alias in ("default", "other"):
        with connections[alias].schema_editor() as editor:
            editor.create_model(Parent)
            editor.create_model(Item)
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "ALTER TABLE corrapp_item ADD FOREIGN KEY (parent_id) "
                "REFERENCES corrapp_parent (id) ON DELETE CASCADE"
            )
    read = Counted(reader_for(system))
    try:
        cache.clear()
        stale = {
            "autocommit": cases.autocommit_race(read, trials),
            "on_commit": cases.on_commit(read, trials),
            "Celery": cases.celery_task(read, trials, broker),
            "Now()": cases.now_update(read, trials),
            "raw UPDATE": cases.raw_update(read, trials),
            "DB cascade": cases.db_cascade(read, trials),
            "REPEATABLE READ": cases.repeatable_read(read, min(trials, 200)),
            "second DB": cases.second_database(read, trials),
            "lagging replica": cases.lagging_replica(read, trials, databases()),
        }
        stale["left"] = stale["autocommit"].pop("left")
    finally:
        connections.close_all()
        for alias in ("default", "other"):
            with connections[alias].schema_editor() as editor:
                editor.delete_model(Item)
                editor.delete_model(Parent)
        cache.clear()
    return {"stale": stale, "reads": read.reads, "hits": read.hits}


# -- the table --


def ensure_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as db:
        for name in (DATABASE, f"{DATABASE}_other"):
            if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                db.execute(f'CREATE DATABASE "{name}"')


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
    parser.add_argument("--redis-port", type=int, default=6379, help="on 127.0.0.1 (6379)")
    parser.add_argument("--broker", default=BROKER, help=f"Celery's broker ({BROKER})")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.redis_url, args.trials, args.broker)))
        return
    global REDIS
    REDIS = ("127.0.0.1", args.redis_port)
    ensure_database()
    ports = {0: REDIS[1], 250: delay_proxy(125e-6)}
    rows = []
    for system in args.systems.split(","):
        ensure_installed(system)
        for delay, port in ports.items():
            url = f"redis://127.0.0.1:{port}/{REDIS_DB}"
            command = [sys.executable, __file__, "--worker", system, "--redis-url", url]
            command += ["--broker", args.broker]
            done = subprocess.run(
                [*command, "--trials", str(args.trials)], capture_output=True, text=True, cwd=ROOT
            )
            if done.returncode:
                print(f"{system} ({delay} µs): failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append((system, delay, json.loads(done.stdout.strip().splitlines()[-1])))
    print_table(rows, args.trials)


def print_table(rows: list, trials: int) -> None:
    widths = [max(len(case), 7) for case in CASES]
    header = " ".join(f"{c:>{w}}" for c, w in zip(CASES, widths, strict=True))
    print(f"stale reads per 1,000 ({trials} trials per case; PostgreSQL, Redis 7, loopback)")
    print(f"{'system':10} {'added':>6} {header}  hit ratio")
    for system, delay, result in rows:
        cells = []
        for case, width in zip(CASES, widths, strict=True):
            figures = result["stale"][case]
            if figures is None:
                cells.append(f"{'-':>{width}}")
            elif case == "left":
                cells.append(f"{figures['stale']:{width}d}")
            else:
                cells.append(f"{1000 * figures['stale'] / max(1, figures['reads']):{width}.1f}")
        ratio = result["hits"] / max(1, result["reads"])
        print(f"{system:10} {delay:>4}µs " + " ".join(cells) + f"  {ratio:9.3f}")


if __name__ == "__main__":
    main()
