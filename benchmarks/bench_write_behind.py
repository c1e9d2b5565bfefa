"""Benchmark write-behind: write_behind.save against Model.save, and the drain, on PostgreSQL.

Run from the repository root (PostgreSQL and Redis answering):

    python benchmarks/bench_write_behind.py [--saves N] [--rows N] [--batch-size N]
        [--database-url postgres://postgres@127.0.0.1:5432/wt_h5]

Makes a throw-away table (tests.testapp's Counter, registered with
write_behind=True) in the database the URL names and drops it at the end; the
journal and cache live in Redis database 14 under a prefix of their own, deleted
at the end. Prints, for ``--saves`` saves (default 10,000) spread over
``--rows`` rows (default 1,000):

- the median time of one ``write_behind.save(obj, update_fields=["hits"])`` and
  of one ``obj.save(update_fields=["hits"])`` (the model as registered: both
  include the model layer's invalidation locks), and their ratio (target <= 0.2);
- the SQL statements ``write_behind.flush()`` runs to drain everything (target:
  about rows / BATCH_SIZE bulk statements, not one per save) and its rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import django  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/14"
PREFIX = "bench-write-behind"


def configure(database_url: str, batch_size: int) -> None:
    from tests.settings import database_from_url

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
        TIERCACHE={
            "STATS": False,
            "WRITE_BEHIND": {"KEY_PREFIX": PREFIX, "TRIGGER": False, "BATCH_SIZE": batch_size},
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def timed(call, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/wt_h5"),
    )
    args = parser.parse_args()
    configure(args.database_url, args.batch_size)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_tiercache import write_behind
    from tests.testapp.models import Counter

    with connection.schema_editor() as editor:
        editor.create_model(Counter)
    try:
        rows = Counter.objects.bulk_create([Counter(name=f"row-{i}") for i in range(args.rows)])

        def direct(i: int) -> None:
            row = rows[i % len(rows)]
            row.hits += 1
            row.save(update_fields=["hits"])

        def behind(i: int) -> None:
            row = rows[i % len(rows)]
            row.hits += 1
            write_behind.save(row, update_fields=["hits"])

        direct_s = timed(direct, args.saves)
        behind_s = timed(behind, args.saves)
        pending = write_behind.stats()["pending"]
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            written = write_behind.flush()
            drain_s = time.perf_counter() - started
        assert sorted(set(Counter.objects.values_list("hits", flat=True))) == [
            2 * args.saves // args.rows
        ], "every row must hold its latest count"
        kinds: dict[str, int] = {}
        for query in queries.captured_queries:
            verb = query["sql"].split()[0].upper()
            kinds[verb] = kinds.get(verb, 0) + 1
        direct_us = statistics.median(direct_s) * 1e6
        behind_us = statistics.median(behind_s) * 1e6
        version = connection.pg_version if connection.vendor == "postgresql" else ""
        lines = [
            f"{args.saves:,} saves over {args.rows:,} rows, BATCH_SIZE {args.batch_size}, "
            f"{connection.vendor} {version}",
            f"Model.save(update_fields=['hits'])         median {direct_us:8.0f} us",
            f"write_behind.save(update_fields=['hits'])  median {behind_us:8.0f} us",
            f"ratio write_behind / Model.save            {behind_us / direct_us:8.2f} (<= 0.2)",
            f"pending rows before the drain              {pending:8,}",
            f"drain: rows written                        {written:8,}",
            f"drain: SQL statements                      {len(queries.captured_queries):8,} "
            f"{kinds}",
            f"drain: seconds / rows per second           {drain_s:8.3f} / {written / drain_s:,.0f}",
        ]
        print("\n".join(lines))
    finally:
        with connection.schema_editor() as editor:
            editor.delete_model(Counter)
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"*{PREFIX}*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
