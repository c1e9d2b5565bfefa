"""Writers and readers racing on PostgreSQL: does any reader ever go back in time?

Writers bump Product.version in transactions. Readers read each product in
turn through get_object() and cached_queryset(), and straight from the
database; a read is *stale* when it returns a version older than one the same
reader has already seen (from the database or the cache). Used at a small size
by tests/test_stress.py and at full size by benchmarks/bench_invalidation.py.

    python -m tests.stress writer|reader --seconds 5 --pks 1,2,3
prints one JSON line: {"role", "operations", "stale", "reads", "redirections"}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def writer(pks: list[int], seconds: float, limit: int, pause: float = 0.0) -> dict:
    from django.db import transaction
    from redis.exceptions import RedisError

    from tests.testapp.models import Product

    deadline, writes, refused = time.monotonic() + seconds, 0, 0
    while time.monotonic() < deadline and writes < limit:
        try:
            with transaction.atomic():
                product = Product.objects.select_for_update().get(pk=pks[writes % len(pks)])
                product.version += 1
                product.save()
        except RedisError:  # InvalidationIncomplete: the save was refused, nothing committed
            refused += 1
            time.sleep(0.01)
            continue
        writes += 1
        time.sleep(pause)
    return {"role": "writer", "operations": writes, "refused": refused}


def reader(pks: list[int], seconds: float, limit: int, pause: float = 0.0) -> dict:
    from django_tiercache import cached_queryset, get_object
    from tests.testapp.models import Product

    seen = dict.fromkeys(pks, -1)
    deadline, reads, stale = time.monotonic() + seconds, 0, 0
    while time.monotonic() < deadline and reads < limit:
        pk = pks[reads % len(pks)]
        for read in (
            lambda pk: Product.objects.get(pk=pk).version,
            lambda pk: get_object(Product, pk).version,
            lambda pk: cached_queryset(Product.objects.filter(pk=pk))[0].version,
        ):
            version = read(pk)
            reads += 1
            if version < seen[pk]:
                stale += 1
            seen[pk] = max(seen[pk], version)
    return {"role": "reader", "reads": reads, "stale": stale}


def run(
    writers: int,
    readers: int,
    pks: list[int],
    seconds: float,
    env: dict,
    limit: int = 10**9,
    pause: float = 0.0,
) -> list[dict]:
    """Start the processes, wait for them (bounded), return their reports.

    `pause`: seconds each writer waits between two commits, so that an entry
    can stay cached (and be brought back stale) for a while.
    """
    command = [sys.executable, "-m", "tests.stress"]
    args = ["--seconds", str(seconds), "--pks", ",".join(map(str, pks)), "--limit", str(limit)]
    args += ["--pause", str(pause)]
    procs = [
        subprocess.Popen(
            [*command, role, *args],
            cwd=ROOT,
            env=env,  # noqa: S603
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ["writer"] * writers + ["reader"] * readers
    ]
    reports = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"stress process failed ({proc.returncode}): {err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def summary(reports: list[dict]) -> dict:
    """The figures a run's reports add up to: commits, refused saves, reads, and
    the stale reads of each reader."""
    writers = [r for r in reports if r["role"] == "writer"]
    readers = [r for r in reports if r["role"] == "reader"]
    return {
        "commits": sum(r["operations"] for r in writers),
        "refused": sum(r.get("refused", 0) for r in writers),
        "reads": sum(r["reads"] for r in readers),
        "stale": [r["stale"] for r in readers],
        "redirections": {
            kind: sum(r.get("redirections", {}).get(kind, 0) for r in reports)
            for kind in sorted({k for r in reports for k in r.get("redirections", {})})
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["writer", "reader"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pks", required=True)
    parser.add_argument("--limit", type=int, default=10**9)
    parser.add_argument("--pause", type=float, default=0.0)
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    pks = [int(pk) for pk in options.pks.split(",")]
    work = writer if options.role == "writer" else reader
    report = work(pks, options.seconds, options.limit, options.pause)
    from django_tiercache.storage.stores.cluster import redirections

    report["redirections"] = redirections.snapshot()  # MOVED, ASK ... followed on a cluster
    print(json.dumps(report))  # noqa: T201


if __name__ == "__main__":
    main()
