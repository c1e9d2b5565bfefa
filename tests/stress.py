"""Writers and readers racing on PostgreSQL: does any reader ever go back in time?

Writers bump Product.version in transactions. Readers read each product in
turn through get_object() and cached_queryset(), and straight from the
database; a read is *stale* when it returns a version older than one the same
reader has already seen (from the database or the cache). Used at a small size
by tests/test_stress.py, under failures by tests/test_cluster.py and
tests/test_sentinel.py (run_disturbed, Probe), and at full size by
benchmarks/bench_invalidation.py.

    python -m tests.stress writer|reader|areader --seconds 5 --pks 1,2,3
prints one JSON line: {"role", "operations", "stale", "reads", "redirections"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Options of the caches the failure runs use: errors are noticed fast.
FAST = {"SOCKET_TIMEOUT": 0.25, "SOCKET_CONNECT_TIMEOUT": 0.25, "BREAKER_COOLDOWN": 0.3}
# How long writes to a disturbed partition (a master or a primary killed, a slot
# migrated) may fail before a failure test fails: a generous bound on recovery,
# not a speed figure (the runs print what they measured; the README quotes it).
ERROR_TIME_BOUND = 30.0
# Where each process of run_disturbed() says it has started (a file per process).
READY_DIR = "TIERCACHE_STRESS_READY"
DISTURBED = (2, 3)  # writers, readers of run_disturbed()


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
    from django.core.cache import cache

    from django_tiercache import cached_queryset, get_object
    from django_tiercache.orm.cache_aside import object_key
    from tests.testapp.models import Product

    l1 = getattr(cache, "_l1", None)  # with L1 on: how often a copy was there to serve
    seen = dict.fromkeys(pks, -1)
    deadline, reads, stale, copies = time.monotonic() + seconds, 0, 0, 0
    started = time.monotonic()
    seen_how: list[str] = []  # the first few stale reads, for the failure's message
    paths = {
        "database": lambda pk: Product.objects.get(pk=pk).version,
        "get_object": lambda pk: get_object(Product, pk).version,
        "cached_queryset": lambda pk: cached_queryset(Product.objects.filter(pk=pk))[0].version,
    }
    while time.monotonic() < deadline and reads < limit:
        pk = pks[reads % len(pks)]
        if l1 is not None and cache.make_key(object_key(Product, pk)) in l1.entries:
            copies += 1
        for path, read in paths.items():
            version = read(pk)
            reads += 1
            if version < seen[pk]:
                stale += 1
                if len(seen_how) < 5:
                    at = time.monotonic() - started
                    seen_how.append(
                        f"{path} pk={pk} v{version} after v{seen[pk]} at {at:.2f}s"
                        f" (clock {time.time():.6f})"
                    )
            seen[pk] = max(seen[pk], version)
    return {
        "role": "reader",
        "reads": reads,
        "stale": stale,
        "stale_reads": seen_how,
        "l1_copies": copies,
    }


def async_reader(pks: list[int], seconds: float, limit: int, pause: float = 0.0) -> dict:
    """reader(), its cache reads made by coroutines (aget_object, acached_queryset,
    native on the loop): ASYNC_READERS of them in one event loop, each a reader of
    its own, checking what it reads against what it saw before."""
    import asyncio

    from asgiref.sync import sync_to_async

    from django_tiercache import acached_queryset, aget_object
    from tests.testapp.models import Product

    deadline = time.monotonic() + seconds

    async def from_database(pk: int) -> int:
        return await sync_to_async(lambda: Product.objects.get(pk=pk).version)()

    async def from_object(pk: int) -> int:
        return (await aget_object(Product, pk)).version

    async def from_queryset(pk: int) -> int:
        return (await acached_queryset(Product.objects.filter(pk=pk)))[0].version

    async def one(start: int) -> tuple[int, int]:
        seen = dict.fromkeys(pks, -1)
        reads = stale = 0
        while time.monotonic() < deadline and reads < limit // ASYNC_READERS + 1:
            pk = pks[(start + reads) % len(pks)]
            for read in (from_database, from_object, from_queryset):
                version = await read(pk)
                reads += 1
                if version < seen[pk]:
                    stale += 1
                seen[pk] = max(seen[pk], version)
        return reads, stale

    async def all_of_them() -> list[tuple[int, int]]:
        return await asyncio.gather(*[one(i) for i in range(ASYNC_READERS)])

    results = asyncio.run(all_of_them())
    return {
        "role": "areader",
        "reads": sum(reads for reads, _ in results),
        "stale": sum(stale for _, stale in results),
    }


ASYNC_READERS = 4  # coroutines per async reader process


def run(
    writers: int,
    readers: int,
    pks: list[int],
    seconds: float,
    env: dict,
    limit: int = 10**9,
    pause: float = 0.0,
    reader_role: str = "reader",
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
        for role in ["writer"] * writers + [reader_role] * readers
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
    readers = [r for r in reports if r["role"] in ("reader", "areader")]
    return {
        "commits": sum(r["operations"] for r in writers),
        "refused": sum(r.get("refused", 0) for r in writers),
        "reads": sum(r["reads"] for r in readers),
        "stale": [r["stale"] for r in readers],
        "stale_reads": [line for r in readers for line in r.get("stale_reads", [])],
        "redirections": {
            kind: sum(r.get("redirections", {}).get(kind, 0) for r in reports)
            for kind in sorted({k for r in reports for k in r.get("redirections", {})})
        },
    }


def cache_setting(location: Any, stem: str) -> dict:
    """The writers' and readers' cache over `location`: failing fast, a short tag lease,
    a KEY_PREFIX of its own."""
    return {
        "BACKEND": "django_tiercache.backend.TierCache",
        "LOCATION": location,
        "KEY_PREFIX": f"{stem}-{uuid.uuid4().hex[:6]}",
        "OPTIONS": {"TAG_LEASE": 1.0, **FAST},
    }


def run_disturbed(
    env: dict,
    pks: list[int],
    disturb: Callable[[], Any],
    seconds: float = 9,
    after: float = 3,
    reader_role: str = "reader",
) -> tuple[dict, Any]:
    """Two writers and three readers (`run`, 20 ms between commits; "areader": each
    reader's reads made by coroutines) while `disturb()` runs in a thread started
    `after` seconds in: the run's summary and what disturb() returned (what it
    raised is raised here)."""
    outcome: dict[str, Any] = {}
    ready = Path(tempfile.mkdtemp(prefix="tiercache-stress-"))
    env = {**env, READY_DIR: str(ready)}

    def later() -> None:
        # `after` seconds into the processes' own runs, not from their launch: on
        # a loaded machine starting Python and Django can take longer than that,
        # and a disturbance over before they run would test nothing.
        deadline = time.monotonic() + 60
        while len(list(ready.iterdir())) < sum(DISTURBED) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(after)
        try:
            outcome["note"] = disturb()
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=later)
    thread.start()
    try:
        reports = run(*DISTURBED, pks, seconds, env, pause=0.02, reader_role=reader_role)
    finally:
        thread.join()
        shutil.rmtree(ready, ignore_errors=True)
    if "error" in outcome:
        raise outcome["error"]
    return summary(reports), outcome.get("note")


def describe(what: str, totals: dict, note: Any = None) -> str:
    """One line of a run's figures, for the test's output."""
    line = (
        f"{what}: {totals['reads']} reads, {totals['commits']} commits "
        f"({totals['refused']} saves refused), stale {totals['stale']}"
    )
    if totals.get("redirections"):
        line += f", redirections followed {totals['redirections']}"
    return f"{line}, {note}" if note else line


def assert_no_stale_reads_and_bounded_errors(totals: dict, probe: Probe) -> None:
    """What a failure run must show: it really ran, no reader went back in time, and
    the probe's writes failed for less than ERROR_TIME_BOUND in all."""
    assert totals["commits"] > 20 and totals["reads"] > 300, "the race did not really run"
    assert totals["stale"] == [0] * len(totals["stale"]), totals["stale_reads"]
    assert probe.recovered, f"no write succeeded within {ERROR_TIME_BOUND} s of the failure"
    assert probe.error_time < ERROR_TIME_BOUND


def show(capsys: Any, line: str) -> None:
    """Print a run's figures past pytest's capture (the figures the issue asks to see)."""
    with capsys.disabled():
        print("\n  " + line)  # noqa: T201


class Probe:
    """Writes `keys` through `cache` (built with RAISE_ERRORS) every 20 ms in a
    thread while a disturbance runs, and adds up how long writes failed: each
    failure lasts from its first failed write to the next write that succeeds.

        with Probe(cache, keys) as probe:
            killed = time.monotonic()
            crash(master)
            probe.disturbed(since=killed)
        # probe.error_time: from the kill to the first write that succeeded after it

    Leaving the block waits (ERROR_TIME_BOUND at most) for a write begun after
    disturbed() to succeed: `recovered` says whether one did. With `coroutines`,
    the writes are ``aset_many``s awaited on an event loop of the probe's thread.
    """

    def __init__(self, cache: Any, keys: list[str], coroutines: bool = False):
        self.cache, self.keys, self.coroutines = cache, keys, coroutines
        self.writes = self.failures = 0
        self.error_time = 0.0
        self._failing_since: float | None = None
        self._marked = 0.0  # when disturbed() was called
        self._written_since_marked = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def recovered(self) -> bool:
        """Has a write begun after disturbed() succeeded, with no failure since?"""
        return self._written_since_marked and self._failing_since is None

    def figures(self) -> str:
        line = f"probe: {self.failures} of {self.writes} writes failed, for {self.error_time:.2f} s"
        if self._failing_since is not None:
            line += f", still failing {time.monotonic() - self._failing_since:.2f} s on"
        return line

    def disturbed(self, since: float | None = None) -> None:
        """The disturbance is done (a kill) or over (a migration). With `since` (a
        time.monotonic()), writes count as failing from then on, until one begun
        after this call succeeds: a kill stops writes even before one fails."""
        with self._lock:
            self._marked, self._written_since_marked = time.monotonic(), False
            if since is not None:
                self._failing_since = min(since, self._failing_since or since)

    def stop(self, bound: float = ERROR_TIME_BOUND) -> None:
        """Stop once writes succeed again, waiting `bound` seconds at most."""
        deadline = time.monotonic() + bound
        while not self.recovered and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop() if self.coroutines else None
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                written = self._write(loop)
                now = time.monotonic()
                with self._lock:
                    self._count(started, now, written)
                self._stop.wait(0.02)
        finally:
            if loop is not None:
                loop.close()

    def _count(self, started: float, now: float, written: bool) -> None:
        self.writes += 1
        if not written:
            self.failures += 1
            if self._failing_since is None:
                self._failing_since = started
        elif started >= self._marked:  # begun before disturbed(): it tells nothing
            self._written_since_marked = True
            if self._failing_since is not None:
                self.error_time += now - self._failing_since
                self._failing_since = None

    def _write(self, loop: Any) -> bool:
        from redis.exceptions import RedisError

        values = dict.fromkeys(self.keys, 1)
        try:
            if loop is not None:
                return not loop.run_until_complete(self.cache.aset_many(values))
            return not self.cache.set_many(values)
        except RedisError:
            return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["writer", "reader", "areader"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pks", required=True)
    parser.add_argument("--limit", type=int, default=10**9)
    parser.add_argument("--pause", type=float, default=0.0)
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    if os.environ.get(READY_DIR):  # run_disturbed() starts its clock once all are here
        Path(os.environ[READY_DIR], str(os.getpid())).touch()
    pks = [int(pk) for pk in options.pks.split(",")]
    work = {"writer": writer, "reader": reader, "areader": async_reader}[options.role]
    report = work(pks, options.seconds, options.limit, options.pause)
    from django_tiercache.storage.stores.cluster import redirections

    report["redirections"] = redirections.snapshot()  # MOVED, ASK ... followed on a cluster
    print(json.dumps(report))  # noqa: T201


if __name__ == "__main__":
    main()
