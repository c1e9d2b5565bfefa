"""Benchmark: write_behind.save with its journal on a Sentinel primary, with and without WAIT.

Run from the repository root (redis-server on PATH; nothing else needed):

    python benchmarks/bench_write_behind_wait.py [--saves N] [--rounds N]

Starts a throw-away Sentinel set on free loopback ports (a primary, one replica,
three sentinels; tests/redis_servers.py) and stops it at the end. Times
``write_behind.save(obj, update_fields=["hits"])`` over 100 rows with
``REPLICAS`` 0 (no WAIT) and 1 (``WAIT 1`` after each enqueue), alternating
``--rounds`` rounds of ``--saves`` saves each, and prints the median of each.
The saves never reach the database (SQLite in memory, only to build the rows).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

from tests.redis_servers import SentinelSet  # noqa: E402

PREFIX = "bench-wb-wait"


def configure(journal_url: str) -> None:
    settings.configure(
        SECRET_KEY="bench-only",  # noqa: S106
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_tiercache",
            "tests.testapp",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={
            "default": {"BACKEND": "django_tiercache.backend.TierCache", "LOCATION": "memory://"}
        },
        TIERCACHE={
            "STATS": False,
            "WRITE_BEHIND": {"KEY_PREFIX": PREFIX, "TRIGGER": False, "REDIS_URL": journal_url},
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    servers = SentinelSet(Path(tempfile.mkdtemp(prefix="bench-wb-wait-")))
    servers.start()
    try:
        configure(servers.url())
        from django.db import connection
        from django.test.utils import override_settings

        from django_tiercache import write_behind
        from tests.testapp.models import Counter

        with connection.schema_editor() as editor:
            editor.create_model(Counter)
        rows = Counter.objects.bulk_create([Counter(name=f"row-{i}") for i in range(100)])
        samples: dict[int, list[float]] = {0: [], 1: []}
        for _ in range(args.rounds):
            for replicas in (0, 1):
                wb = {**settings.TIERCACHE["WRITE_BEHIND"], "REPLICAS": replicas}
                with override_settings(TIERCACHE={**settings.TIERCACHE, "WRITE_BEHIND": wb}):
                    for i in range(args.saves):
                        row = rows[i % len(rows)]
                        row.hits += 1
                        started = time.perf_counter()
                        version = write_behind.save(row, update_fields=["hits"])
                        samples[replicas].append(time.perf_counter() - started)
                        assert version, "the save fell back to the database"
        without, with_wait = (statistics.median(samples[r]) * 1e6 for r in (0, 1))
        print(f"{len(samples[0]):,} saves each, journal on a Sentinel primary (loopback replica)")
        print(f"write_behind.save, REPLICAS 0 (no WAIT)  median {without:7.0f} us")
        print(f"write_behind.save, REPLICAS 1 (WAIT 1)   median {with_wait:7.0f} us")
        print(f"difference                              {with_wait - without:7.0f} us")
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
