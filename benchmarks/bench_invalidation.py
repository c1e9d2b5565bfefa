"""Model-driven invalidation on PostgreSQL: what a save costs, and stale reads.

    python benchmarks/bench_invalidation.py [--quick] [--seconds N]

1. Model.save() of a row (one UPDATE, autocommit and in its own transaction):
   a model nobody caches, the same with django_tiercache's invalidation, and
   with django-cacheops' automatic invalidation (in a separate process with
   cacheops installed; skipped when django-cacheops is not installed).
2. The stress run of tests/stress.py at full size: writer and reader
   processes racing; a stale read is a version older than one already seen.

Uses the PostgreSQL database "tiercache_bench" (created if missing) and Redis
db 12 on 127.0.0.1:6379. Prints a table and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATABASE = "tiercache_bench"
ENV = {
    **os.environ,
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
    "TIERCACHE_TEST_REDIS_URL": "redis://127.0.0.1:6379/12",
    "DJANGO_SETTINGS_MODULE": "tests.settings",
}


def ensure_database() -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as db:
        if not db.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            db.execute(f'CREATE DATABASE "{DATABASE}"')


def time_saves(model_name: str, saves: int, rounds: int) -> dict[str, float]:
    """Median microseconds per save, autocommit and in a transaction each."""
    from django.core.management import call_command
    from django.db import transaction

    from tests.testapp import models

    call_command("migrate", run_syncdb=True, verbosity=0)
    model = getattr(models, model_name)
    model.objects.filter(name__startswith=f"bench-{model_name}").delete()
    row = model.objects.create(name=f"bench-{model_name}")
    results = {}
    for label, wrap in (("autocommit", None), ("transaction", transaction.atomic)):
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            for i in range(saves):
                # Change a column, not what the model's tags are made of.
                if hasattr(row, "version"):
                    row.version = i
                else:
                    row.name = f"bench-{model_name}-{i % 2}"
                if wrap is None:
                    row.save()
                else:
                    with wrap():
                        row.save()
            samples.append((time.perf_counter() - started) / saves * 1e6)
        results[label] = statistics.median(samples)
    return results


def saves_in_process(settings_module: str, model_name: str, saves: int, rounds: int) -> dict:
    code = (
        "import django, json; django.setup();"
        "from benchmarks.bench_invalidation import time_saves;"
        f"print(json.dumps(time_saves({model_name!r}, {saves}, {rounds})))"
    )
    env = {**ENV, "DJANGO_SETTINGS_MODULE": settings_module}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,  # noqa: S603
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def cacheops_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("cacheops") is not None


def stress(seconds: float) -> dict:
    os.environ.update(ENV)
    import django

    django.setup()
    from django.core.cache import cache
    from django.core.management import call_command

    from tests import stress as stress_module
    from tests.testapp.models import Product

    call_command("migrate", run_syncdb=True, verbosity=0)
    cache.clear()
    Product.objects.filter(name__startswith="stress-").delete()
    pks = [Product.objects.create(name=f"stress-{i}").pk for i in range(5)]
    reports = stress_module.run(writers=3, readers=4, pks=pks, seconds=seconds, env=ENV)
    return {
        "writes": sum(r.get("operations", 0) for r in reports if r["role"] == "writer"),
        "reads": sum(r.get("reads", 0) for r in reports if r["role"] == "reader"),
        "stale": sum(r.get("stale", 0) for r in reports if r["role"] == "reader"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer saves, a 5 s stress run")
    parser.add_argument("--seconds", type=float, default=None, help="stress run length (30)")
    options = parser.parse_args()
    saves, rounds = (200, 5) if options.quick else (1000, 9)
    seconds = options.seconds or (5.0 if options.quick else 30.0)
    ensure_database()
    rows = {
        "plain save (model not cached)": saves_in_process(
            "tests.settings", "Unregistered", saves, rounds
        ),
        "save + django_tiercache invalidation": saves_in_process(
            "tests.settings", "Product", saves, rounds
        ),
    }
    if cacheops_available():
        rows["save + django-cacheops invalidation"] = saves_in_process(
            "benchmarks.cacheops_settings", "Unregistered", saves, rounds
        )
    print(f"Model.save() on PostgreSQL, median µs per save ({saves} saves x {rounds} rounds)")
    print(f"{'':40} | {'autocommit':>10} | {'transaction':>11}")
    for label, figures in rows.items():
        print(f"{label:40} | {figures['autocommit']:10.1f} | {figures['transaction']:11.1f}")
    base = rows["plain save (model not cached)"]
    print("\nratios against the plain save (target for django_tiercache: <= 1.1)")
    for label, figures in list(rows.items())[1:]:
        ratios = [figures[k] / base[k] for k in ("autocommit", "transaction")]
        print(f"  {label:38} autocommit {ratios[0]:.2f}  transaction {ratios[1]:.2f}")
    if not cacheops_available():
        print("  (django-cacheops is not installed: pip install django-cacheops to compare)")
    figures = stress(seconds)
    print(
        f"\nstress, {seconds:.0f} s, 3 writers x 4 readers: {figures['writes']} commits, "
        f"{figures['reads']} reads, {figures['stale']} stale"
    )


if __name__ == "__main__":
    main()
