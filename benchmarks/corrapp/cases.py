"""The cases bench_correctness.py runs, each a function of (read, trials) returning
{"stale": n, "reads": n}; ``read(pk)`` is the system's own way to read an Item.

A read is stale when it returns a state older than one committed before the read
began (or a row deleted before it began). See bench_correctness.py for the list.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlsplit


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


def now_update(read, trials: int) -> dict:
    """``update(updated=Now())``, every other time on rows a subquery picks; then a read.
    Stale: the read's ``updated`` is not the database's (read with a plain cursor)."""
    from django.db import connection
    from django.db.models import F, Subquery
    from django.db.models.functions import Now

    from benchmarks.corrapp.models import Item

    item = Item.objects.create(version=0)
    stale = 0
    for n in range(trials):
        read(item.pk)
        if n % 2:
            Item.objects.filter(pk=item.pk).update(updated=Now())
        else:
            picked = Item.objects.filter(pk=item.pk).values("pk")
            Item.objects.filter(pk__in=Subquery(picked)).update(
                updated=Now(), version=F("version") + 1
            )
        with connection.cursor() as cursor:
            cursor.execute("SELECT updated FROM corrapp_item WHERE id = %s", [item.pk])
            (in_database,) = cursor.fetchone()
        stale += read(item.pk).updated != in_database
    return {"stale": stale, "reads": trials}


def answering(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=2).close()
    except OSError:
        return False
    return True


def celery_task(read, trials: int, broker: str) -> dict | None:
    """An ``on_commit`` hook (registered before the save) sends a Celery task; a worker
    (a thread of this process, on ``broker``) reads the row. None without a broker."""
    if not answering(broker):
        return None
    from celery import Celery
    from celery.contrib.testing.worker import start_worker
    from django.db import transaction

    from benchmarks.corrapp.models import Item

    app = Celery("bench-correctness", broker=broker, backend="rpc://")
    app.conf.task_default_queue = f"bench-correctness-{os.getpid()}"
    app.conf.broker_heartbeat = 0

    @app.task(name="bench_correctness.read_version")
    def read_version(pk):
        return read(pk).version

    item = Item.objects.create(version=0)
    read(item.pk)
    stale = 0
    with start_worker(app, perform_ping_check=False, shutdown_timeout=10):
        for version in range(1, trials + 1):
            sent: list = []
            with transaction.atomic():
                transaction.on_commit(lambda sent=sent: sent.append(read_version.delay(item.pk)))
                item.version = version
                item.save(update_fields=["version"])
            stale += sent[0].get(timeout=60) != version
    with app.connection_for_write() as conn:
        conn.default_channel.queue_delete(app.conf.task_default_queue)
    return {"stale": stale, "reads": trials}


def second_database(read, trials: int) -> dict:
    """Item routed to a second database ("other"): saved there in autocommit, or in
    ``atomic(using="other")`` with an ``on_commit(using="other")`` hook reading it."""
    from django.db import transaction

    from benchmarks.corrapp import routers
    from benchmarks.corrapp.models import Item

    routers.MODE = "second"
    try:
        item = Item.objects.create(version=0)
        read(item.pk)
        stale = reads = 0
        for version in range(1, trials + 1):
            item.version = version
            if version % 2:
                seen: list[int] = []
                with transaction.atomic(using="other"):
                    transaction.on_commit(
                        lambda seen=seen: seen.append(read(item.pk).version), using="other"
                    )
                    item.save(update_fields=["version"])
                stale += seen != [version]
                reads += 1
            else:
                item.save(update_fields=["version"])
            stale += read(item.pk).version != version
            reads += 1
    finally:
        routers.MODE = "default"
    return {"stale": stale, "reads": reads}


def lagging_replica(read, trials: int, databases: dict) -> dict:
    """Item written on the primary and read from a replica ("other") that gets each
    write only after a read: the replica's copy is made behind Django's back (as
    replication is). Stale: a read after the replica caught up still returns the
    older row (cached from the lagging replica; without a cache it would not be)."""
    import psycopg

    from benchmarks.corrapp import routers
    from benchmarks.corrapp.models import Item

    def connect(alias):
        settings = databases[alias]
        return psycopg.connect(
            dbname=settings["NAME"],
            host=settings["HOST"],
            port=settings["PORT"] or 5432,
            user=settings["USER"],
            autocommit=True,
        )

    primary, replica = connect("default"), connect("other")

    def replicate(pk):
        row = primary.execute(
            "SELECT id, parent_id, version, updated FROM corrapp_item WHERE id = %s", [pk]
        ).fetchone()
        replica.execute(
            "INSERT INTO corrapp_item (id, parent_id, version, updated) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, "
            "updated = EXCLUDED.updated",
            row,
        )

    routers.MODE = "replica"
    try:
        item = Item.objects.create(version=0)
        replicate(item.pk)
        read(item.pk)
        stale = 0
        for version in range(1, trials + 1):
            item.version = version
            item.save(update_fields=["version"])  # on the primary; the replica lags
            read(item.pk)  # while it lags
            replicate(item.pk)  # it caught up
            stale += read(item.pk).version != version
    finally:
        routers.MODE = "default"
        primary.close()
        replica.close()
    return {"stale": stale, "reads": trials}
