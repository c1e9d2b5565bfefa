"""The user's figure: a shop under load through each cache, served by gunicorn, driven by wrk.

    make bench-load            # installs gunicorn, django-cacheops, matplotlib and wrk when missing
    python benchmarks/bench_load.py [--quick] [--out build/bench-load] [--workers 4]

One app (benchmarks/loadapp: a product page and a product edit), the same data (``--products``
rows, each system with its own copy in a PostgreSQL schema of its own, so one system's writes never
reach another's cache), the same gunicorn (sync workers, ``--workers``) and the same load (wrk, one
thread, two connections per worker, Zipf-chosen products, s = ``--zipf``), loopback only, for:

- nocache   ``Product.objects.get(pk=pk)`` on every request;
- django    Django's RedisCache, hand-written cache-aside (get, else query and set; delete after
            a save);
- djredis   django-redis, the same code;
- cacheops  django-cacheops' automatic caching (``ops: all``) of that same query;
- tier      TierCache ``get_object`` with model invalidation (``register``);
- tier_l1   the same with ``OPTIONS["L1"] = True``;
- ceiling   Django's LocMemCache, the same cache-aside code: an in-process dict, no network, no
            coherence between processes (it serves stale reads after another worker's write). No
            cache can serve a hit for less, so its req/s bounds what any cache could reach here.

Each system has a redis-server of its own on a free port (started and stopped here). Mixes:
read-only; 95/5 reads/writes (a write is ``select_for_update().get()``, ``version += 1``, ``save()``
in a transaction); a write burst (read-only, then 50 % writes for the middle third, then read-only).
The read-only and 95/5 mixes run ``--rounds`` rounds, systems interleaved (other work on a shared
machine then hits all alike); the tables give medians over the rounds.

Per cell: requests/s, latency p50/p99/p99.9 (wrk), hit rate (reads that ran no query), database
queries per request, Redis memory (used_memory over an empty server), gunicorn CPU per request, and
stale reads: every read first takes the highest version committed for its product (kept in shared
memory, written after the write's transaction returned), and a read that then gets an older version
is stale.

Then concurrency scaling (read-only, 1, 2, 4 and 8 workers, django-redis and TierCache + L1), and
the fault run: TierCache + L1 over three partitions, 95/5, one partition SIGKILLed a third of the
way in and restarted some seconds later; requests and 5xx per second (table, ``fault.png``).
The last line gives the headline ratios as name=value pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _servers  # noqa: E402
from benchmarks.loadapp import shared  # noqa: E402

LUA = ROOT / "benchmarks" / "load.lua"
SYSTEMS = {
    "nocache": "no cache",
    "django": "Django RedisCache, cache-aside",
    "djredis": "django-redis, cache-aside",
    "cacheops": "django-cacheops",
    "tier": "TierCache get_object",
    "tier_l1": "TierCache + L1",
    "ceiling": "ceiling: LocMemCache, cache-aside (not coherent)",
}
NO_REDIS = ("nocache", "ceiling")
SCALING_SYSTEMS = ("djredis", "tier_l1")
ASGI_SYSTEMS = ("djredis", "tier_l1")
SCALING_WORKERS = (1, 2, 4, 8)
CLK_TCK = os.sysconf("SC_CLK_TCK")
BEGAN = time.monotonic()


def stamp(phase: str) -> None:
    print(f"  -- {phase} ({time.monotonic() - BEGAN:.0f} s in)", flush=True)


@dataclass
class Cfg:
    seconds: float
    rounds: int
    burst_seconds: int
    warmup: float
    workers: int
    products: int
    zipf: float
    scaling_seconds: float
    fault_seconds: int
    fault_kill_at: int
    fault_down: int
    database_url: str
    out: Path
    quick: bool


# -- processes --


class Server:
    """One gunicorn (sync workers) serving the shop for one system; with `asgi`, uvicorn
    (uvloop, httptools) serving it with the async views."""

    def __init__(
        self,
        cfg: Cfg,
        system: str,
        schema: str,
        redis_ports: list[int],
        workers: int,
        extra_env: dict[str, str] | None = None,
        asgi: bool = False,
    ):
        self.cfg, self.system, self.schema, self.workers = cfg, system, schema, workers
        self.redis_ports = redis_ports
        self.redis_base = 0
        self.port = _servers.free_port()
        fd, self.shm = tempfile.mkstemp(
            prefix=f"tiercache-load-{system}-",
            dir="/dev/shm" if Path("/dev/shm").is_dir() else None,  # noqa: S108
        )
        os.close(fd)
        shared.create(self.shm, cfg.products)
        server = "uvicorn" if asgi else "gunicorn"
        self.log = cfg.out / f"{server}-{schema}-w{workers}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "DJANGO_SETTINGS_MODULE": "benchmarks.loadapp.settings",
            "LOAD_SYSTEM": system,
            "LOAD_REDIS": ",".join(f"redis://127.0.0.1:{p}/0" for p in redis_ports),
            "LOAD_DATABASE_URL": cfg.database_url,
            "LOAD_SCHEMA": schema,
            **(extra_env or {}),
            "LOAD_SHM": self.shm,
            "LOAD_PRODUCTS": str(cfg.products),
        }
        cmd = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(workers), "--worker-class", "sync",
            "--bind", f"127.0.0.1:{self.port}", "--backlog", "2048",
            "--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning",
            "benchmarks.loadapp.wsgi:application",
        ]  # fmt: skip
        if asgi:
            cmd = [
                sys.executable, "-m", "uvicorn", "benchmarks.loadapp.asgi:application",
                "--workers", str(workers), "--host", "127.0.0.1", "--port", str(self.port),
                "--loop", "uvloop", "--http", "httptools", "--backlog", "2048",
                "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "5",
            ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.ready_at = 0.0

    def wait_ready(self) -> Server:
        self._wait_ready()
        self.ready_at = time.monotonic()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn for {self.system} exited; see {self.log}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/r/1/", timeout=5) as r:
                    if r.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn for {self.system} not ready after 60 s; see {self.log}")

    def worker_cpu_s(self) -> float:
        """CPU seconds used so far by the worker processes (children of the master)."""
        total = 0.0
        for pid in _children(self.proc.pid):
            total += _cpu_s(pid)
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(self.shm)


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def redis_memory(ports: list[int]) -> int:
    import redis

    total = 0
    for port in ports:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            total += int(client.info("memory")["used_memory"])
        except redis.RedisError:
            pass
        finally:
            client.close()
    return total


# -- the load --


def run_wrk(
    cfg: Cfg,
    port: int,
    seconds: float,
    connections: int,
    write_pct: float,
    burst: tuple[int, int, float] | None = None,
    timeline: bool = False,
) -> dict:
    cmd = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "--latency", "-s", str(LUA), f"http://127.0.0.1:{port}",
        "--", str(cfg.products), str(cfg.zipf), str(write_pct),
    ]  # fmt: skip
    if burst:
        cmd += [str(burst[0]), str(burst[1]), str(burst[2])]
    env = {**os.environ}
    if timeline:
        env["LOAD_TIMELINE"] = "1"
    else:
        env.pop("LOAD_TIMELINE", None)
    before = os.times()
    done = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=seconds + 60, check=False
    )
    after = os.times()
    result = None
    tl: dict[str, dict[int, int]] = {"tl_ok": {}, "tl_5xx": {}, "tl_other": {}}
    for line in done.stdout.splitlines():
        if line.startswith("LOADJSON "):
            result = json.loads(line[len("LOADJSON ") :])
        elif line.startswith("LOADTL "):
            _, name, second, count = line.split()
            tl[name][int(second)] = tl[name].get(int(second), 0) + int(count)
    if result is None:
        raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {done.stderr[-500:]}")
    result["wrk_cpu_s"] = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    result["timeline"] = tl
    return result


def measure(
    cfg: Cfg,
    server: Server,
    seconds: float,
    write_pct: float,
    burst: tuple[int, int, float] | None = None,
    timeline: bool = False,
) -> dict:
    c0, m0 = shared.totals(server.shm, cfg.products), server.worker_cpu_s()
    w = run_wrk(cfg, server.port, seconds, 2 * server.workers, write_pct, burst, timeline)
    c1, m1 = shared.totals(server.shm, cfg.products), server.worker_cpu_s()
    c = {k: c1[k] - c0[k] for k in c1}
    secs = w["duration_us"] / 1e6
    served = c["reads"] + c["writes"]
    return {
        "rps": w["requests"] / secs,
        "p50_ms": w["p50_us"] / 1000,
        "p99_ms": w["p99_us"] / 1000,
        "p999_ms": w["p999_us"] / 1000,
        "requests": w["requests"],
        "status_errors": w["status"],
        "socket_errors": w["connect"] + w["read"] + w["write"] + w["timeout"],
        "reads": c["reads"],
        "writes": c["writes"],
        "hits": c["hits"],
        "stale": c["stale"],
        "hit_rate": c["hits"] / c["reads"] if c["reads"] else float("nan"),
        "queries_per_request": (c["read_queries"] + c["write_queries"]) / served
        if served
        else float("nan"),
        "app_cpu_us": (m1 - m0) / served * 1e6 if served else float("nan"),
        "wrk_cpu_us": w["wrk_cpu_s"] / w["requests"] * 1e6 if w["requests"] else float("nan"),
        "redis_mb": max(0, redis_memory(server.redis_ports) - server.redis_base) / 2**20
        if server.redis_ports
        else 0.0,
        "timeline": w["timeline"],
        "load1": os.getloadavg()[0],
    }


def combine(cells: list[dict]) -> dict:
    """Medians of the rates and latencies over the rounds; sums of the counts."""
    out = {}
    for key in ("rps", "p50_ms", "p99_ms", "p999_ms", "app_cpu_us", "wrk_cpu_us"):
        out[key] = statistics.median(c[key] for c in cells)
    for key in ("requests", "status_errors", "socket_errors", "reads", "writes", "hits", "stale"):
        out[key] = sum(c[key] for c in cells)
    out["hit_rate"] = out["hits"] / out["reads"] if out["reads"] else float("nan")
    served = sum(c["reads"] + c["writes"] for c in cells)
    out["queries_per_request"] = (
        sum(c["queries_per_request"] * (c["reads"] + c["writes"]) for c in cells) / served
        if served
        else float("nan")
    )
    out["redis_mb"] = max(c["redis_mb"] for c in cells)
    out["rps_rounds"] = [round(c["rps"]) for c in cells]
    out["load1"] = [round(c["load1"], 1) for c in cells]
    return out


# -- data --


def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist (a clean machine)."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"  created database {name}")


def setup_django(cfg: Cfg) -> None:
    ensure_database(cfg.database_url)
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.loadapp.settings"
    os.environ["LOAD_SYSTEM"] = "nocache"
    os.environ["LOAD_DATABASE_URL"] = cfg.database_url
    os.environ["LOAD_SCHEMA"] = "public"
    import django

    django.setup()


def seed(cfg: Cfg, schemas: list[str]) -> None:
    from django.db import connection

    from benchmarks.loadapp.models import Product

    filler = "A sturdy, well-made thing that does what it says on the box. " * 3
    for schema in schemas:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            cursor.execute(f"CREATE SCHEMA {schema}")
            cursor.execute(f"SET search_path TO {schema}")
        with connection.schema_editor() as editor:
            editor.create_model(Product)
        Product.objects.bulk_create(
            Product(
                id=i,
                name=f"Product {i}",
                description=filler,
                price=Decimal(i % 500) + Decimal("0.99"),
                stock=i % 100,
            )
            for i in range(1, cfg.products + 1)
        )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE loadapp_product")
            cursor.execute("SET search_path TO public")


def drop_schemas(schemas: list[str]) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for schema in schemas:
            cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- the runs --


def mixes(cfg: Cfg) -> list[tuple[str, float, tuple[int, int, float] | None, int, float]]:
    """(name, write %, burst window, rounds, seconds per round)."""
    third = cfg.burst_seconds // 3
    return [
        ("read-only", 0, None, cfg.rounds, cfg.seconds),
        ("95/5", 5, None, cfg.rounds, cfg.seconds),
        ("write burst", 0, (third, 2 * third, 50), 1, cfg.burst_seconds),
    ]


# A partition the cache has never seen may have lost write locks, for all it knows: it takes no
# tagged writes (no fills) for WRITE_LOCK_TIMEOUT (30 s) after the first call reaches it. The
# measured runs stand for a site that has been up for a while, so TierCache is warmed only after
# that window; the window itself is measured once, on TierCache + L1 right after its start
# (printed, not in the tables).
QUIET_S = 31.0


def wait_quiet_over(server: Server) -> None:
    left = server.ready_at + QUIET_S - time.monotonic()
    if left > 0:
        print(f"  waiting {left:.0f} s: new TierCache partitions take no tagged writes for 30 s")
        time.sleep(left)


def warm(cfg: Cfg, server: Server, write_pct: float, sweep: bool = True) -> dict:
    """Every product read once (a site that has been up), then the mix itself for a while."""
    if sweep:
        sweep_all(cfg, server)
    return measure(cfg, server, cfg.warmup, write_pct)


def sweep_all(cfg: Cfg, server: Server) -> None:
    """One read of every product, 2 per worker at a time (from here, so that every system gets
    exactly the same reads whatever its speed)."""
    from concurrent.futures import ThreadPoolExecutor

    def read(pk: int) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/r/{pk}/", timeout=30) as r:
            r.read()

    with ThreadPoolExecutor(2 * server.workers) as pool:
        list(pool.map(read, range(1, cfg.products + 1)))


class FaultSetup:
    """TierCache + L1 over three partitions of its own, started with everything else; with
    `witness`, ``OPTIONS["WITNESS"] = "database"`` (its table migrated into the schema first)."""

    def __init__(self, cfg: Cfg, witness: bool) -> None:
        self.cfg, self.witness = cfg, witness
        self.schema = "load_fault_witness" if witness else "load_fault"
        self.workdir = tempfile.mkdtemp(prefix="tiercache-load-fault-")
        self.ports = [_servers.free_port() for _ in range(3)]
        self.procs = {p: _servers._start(p, self.workdir) for p in self.ports}
        base = redis_memory(self.ports)
        extra = {"LOAD_WITNESS": "1"} if witness else {}
        if witness:
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DJANGO_SETTINGS_MODULE": "benchmarks.loadapp.settings",
                "LOAD_SYSTEM": "tier_l1",
                "LOAD_REDIS": ",".join(f"redis://127.0.0.1:{p}/0" for p in self.ports),
                "LOAD_DATABASE_URL": cfg.database_url,
                "LOAD_SCHEMA": self.schema,
                **extra,
            }
            subprocess.run(
                [sys.executable, "-m", "django", "migrate", "django_tiercache", "--noinput", "-v0"],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=120,
            )
        self.server = Server(cfg, "tier_l1", self.schema, self.ports, cfg.workers, extra)
        self.server.redis_base = base

    def run(self) -> dict:
        cfg, server = self.cfg, self.server
        stamp("fault run" + (" with a witness" if self.witness else ""))
        wait_quiet_over(server)
        warm(cfg, server, 5)
        victim = self.ports[1]
        events: dict[str, float] = {}

        def kill() -> None:
            self.procs[victim].kill()  # SIGKILL
            self.procs[victim].wait()
            events["kill"] = time.time()
            time.sleep(cfg.fault_down)
            self.procs[victim] = _servers._start(victim, self.workdir)
            events["restart"] = time.time()

        start = time.time()
        timer = threading.Timer(cfg.fault_kill_at, kill)
        timer.start()
        c = measure(cfg, server, cfg.fault_seconds, 5, timeline=True)
        timer.join()
        c["start"] = start
        c["events"] = {k: v - start for k, v in events.items()}
        return c

    def close(self) -> None:
        self.server.stop()
        for proc in self.procs.values():
            _servers._stop(proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_all(cfg: Cfg, stack: contextlib.ExitStack) -> tuple[dict[str, dict[str, dict]], dict]:
    ports = stack.enter_context(_servers.redis_servers(len(SYSTEMS)))
    bases = {p: redis_memory([p]) for p in ports}
    servers: dict[str, Server] = {}
    for (system, _), port in zip(SYSTEMS.items(), ports, strict=True):
        redis_ports = [] if system in NO_REDIS else [port]
        server = Server(cfg, system, f"load_{system}", redis_ports, cfg.workers)
        server.redis_base = bases[port] if redis_ports else 0
        stack.callback(server.stop)
        servers[system] = server
    faults = [FaultSetup(cfg, witness=False), FaultSetup(cfg, witness=True)]
    for fault in faults:
        stack.callback(fault.close)
    for server in [*servers.values(), *(f.server for f in faults)]:
        server.wait_ready()
    order = list(SYSTEMS)
    cold = measure(cfg, servers["tier_l1"], cfg.warmup, 0)
    print(
        f"  TierCache + L1 in its first {cfg.warmup:g} s on new partitions: "
        f"{cold['rps']:.0f} req/s, "
        f"hit {cold['hit_rate']:.0%} (not in the tables)",
        flush=True,
    )
    for system in sorted(order, key=lambda s: s.startswith("tier")):
        if system.startswith("tier"):
            wait_quiet_over(servers[system])
        c = warm(cfg, servers[system], 0)
        print(f"  warm-up {system:<8} {c['rps']:7.0f} req/s  hit {c['hit_rate']:.0%}", flush=True)
    results: dict[str, dict[str, dict]] = {}
    for mix, write_pct, burst, rounds, seconds in mixes(cfg):
        stamp(mix)
        cells: dict[str, list[dict]] = {s: [] for s in order}
        for r in range(rounds):
            # Each round starts with another system, so no system always follows the same one.
            for system in order[r % len(order) :] + order[: r % len(order)]:
                cells[system].append(measure(cfg, servers[system], seconds, write_pct, burst))
                c = cells[system][-1]
                print(
                    f"  {mix:<11} round {r + 1}/{rounds} {system:<8} {c['rps']:7.0f} req/s "
                    f"p99 {c['p99_ms']:6.1f} ms  hit {c['hit_rate']:.0%}  stale {c['stale']}",
                    flush=True,
                )
        results[mix] = {s: combine(cells[s]) for s in order}
        for system in order:
            # Paired: each round's ratio, then the median of those (rounds ran back to back, so
            # a burst of other work on the machine hits both sides of one ratio alike).
            results[mix][system]["vs"] = {
                other: statistics.median(
                    a["rps"] / b["rps"] for a, b in zip(cells[system], cells[other], strict=True)
                )
                for other in order
            }
    stamp("view cost")
    costs = view_costs(cfg, servers)
    results["view cost"] = costs
    for server in servers.values():
        server.stop()
    scaling = {}
    stamp("scaling")
    for system in SCALING_SYSTEMS:
        port = ports[order.index(system)]
        for workers in SCALING_WORKERS:
            server = Server(cfg, system, f"load_{system}", [port], workers).wait_ready()
            server.redis_base = bases[port]
            try:
                # Redis is warm; this fills the new processes' L1s.
                run_wrk(cfg, server.port, 2, 2 * workers, 0)
                c = measure(cfg, server, cfg.scaling_seconds, 0)
            finally:
                server.stop()
            scaling[f"{system}/{workers}"] = c
            print(
                f"  scaling {system:<8} {workers} workers {c['rps']:7.0f} req/s "
                f"p99 {c['p99_ms']:6.1f} ms  app CPU {c['app_cpu_us']:.0f} µs/req",
                flush=True,
            )
    results["scaling"] = scaling
    stamp("asgi")
    results["asgi"] = run_asgi(cfg, {s: ports[order.index(s)] for s in ASGI_SYSTEMS}, bases)
    results["cold_start"] = {"tier_l1": cold}
    return results, {"no witness": faults[0].run(), "witness": faults[1].run()}


def paired(cells: dict[str, list[dict]], system: str, other: str) -> float:
    """The median of the rounds' req/s ratios (rounds ran back to back)."""
    return statistics.median(
        a["rps"] / b["rps"] for a, b in zip(cells[system], cells[other], strict=True)
    )


def run_asgi(cfg: Cfg, ports: dict[str, int], bases: dict[int, int]) -> dict[str, dict]:
    """The read-only and 95/5 mixes again, served by uvicorn with the async views
    (``aget_object``; django-redis through Django's ``aget``/``aset``), on the warm Redis and
    tables of the sync run."""
    servers = {
        s: Server(cfg, s, f"load_{s}", [ports[s]], cfg.workers, asgi=True) for s in ASGI_SYSTEMS
    }
    out: dict[str, dict] = {}
    try:
        for server in servers.values():
            server.wait_ready()
            server.redis_base = bases[server.redis_ports[0]]
            run_wrk(cfg, server.port, 2, 2 * server.workers, 0)  # fills the new processes' L1s
        order = list(ASGI_SYSTEMS)
        for mix, write_pct, _, rounds, seconds in mixes(cfg)[:2]:
            cells: dict[str, list[dict]] = {s: [] for s in order}
            for r in range(rounds):
                for system in order[r % len(order) :] + order[: r % len(order)]:
                    cells[system].append(measure(cfg, servers[system], seconds, write_pct))
                    c = cells[system][-1]
                    print(
                        f"  asgi {mix:<9} round {r + 1}/{rounds} {system:<8} {c['rps']:7.0f} req/s "
                        f"p99 {c['p99_ms']:6.1f} ms  hit {c['hit_rate']:.0%}  stale {c['stale']}",
                        flush=True,
                    )
            out[mix] = {s: combine(cells[s]) for s in order}
            for system in order:
                out[mix][system]["vs"] = {other: paired(cells, system, other) for other in order}
    finally:
        for server in servers.values():
            server.stop()
    return out


# -- report --


def fmt(value: float, digits: int = 0) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def print_mix(mix: str, rows: dict[str, dict]) -> None:
    loads = [x for c in rows.values() for x in c["load1"]]
    print(f"### {mix}")
    print()
    print(
        f"(machine load average, 1 min, at the end of its cells: {min(loads):.1f} to "
        f"{max(loads):.1f}; req/s per round: "
        + "; ".join(f"{s} {'/'.join(map(str, c['rps_rounds']))}" for s, c in rows.items())
        + ")"
    )
    print()
    print(
        "| system | req/s | vs django-redis | p50 ms | p99 ms | p99.9 ms | hit rate | "
        "queries/req | Redis MB | stale reads | 5xx | socket err | app CPU µs/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for system, c in rows.items():
        print(
            f"| {SYSTEMS[system]} | {fmt(c['rps'])} | {c['vs']['djredis']:.2f}x | "
            f"{fmt(c['p50_ms'], 2)} | {fmt(c['p99_ms'], 1)} | {fmt(c['p999_ms'], 1)} | "
            f"{fmt(c['hit_rate'] * 100, 1)} % | {fmt(c['queries_per_request'], 2)} | "
            f"{fmt(c['redis_mb'], 1)} | {c['stale']} of {c['reads']:,} | {c['status_errors']} | "
            f"{c['socket_errors']} | {fmt(c['app_cpu_us'])} |"
        )
    print()


def print_view_costs(results: dict) -> None:
    costs, read = results["view cost"], results["read-only"]
    print("### where a request's time goes: the views alone (one process, no HTTP) vs gunicorn")
    print()
    print(
        "| system | read: view CPU µs | view wall µs | gunicorn worker CPU µs (read-only) | "
        "the rest: gunicorn, HTTP, accept/close | write: view CPU µs | view wall µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for system, c in costs.items():
        worker = read[system]["app_cpu_us"]
        print(
            f"| {SYSTEMS[system]} | {fmt(c['cpu_us'])} | {fmt(c['wall_us'])} | {fmt(worker)} | "
            f"{fmt(worker - c['cpu_us'])} | {fmt(c['write_cpu_us'])} | {fmt(c['write_wall_us'])} |"
        )
    print()


def print_scaling(scaling: dict[str, dict]) -> None:
    print("### concurrency scaling, read-only (2 connections per worker)")
    print()
    print(
        "| workers | " + " | ".join(f"{SYSTEMS[s]} req/s | p99 ms" for s in SCALING_SYSTEMS) + " |"
    )
    print("|---:|" + "---:|---:|" * len(SCALING_SYSTEMS))
    for w in SCALING_WORKERS:
        cells = [scaling[f"{s}/{w}"] for s in SCALING_SYSTEMS]
        print(
            f"| {w} | "
            + " | ".join(f"{fmt(c['rps'])} | {fmt(c['p99_ms'], 1)}" for c in cells)
            + " |"
        )
    print()
    for s in SCALING_SYSTEMS:
        c = scaling[f"{s}/2"]
        print(
            f"  {SYSTEMS[s]}, 2 workers: gunicorn workers {fmt(c['app_cpu_us'])} µs CPU per "
            f"request, wrk {fmt(c['wrk_cpu_us'])} µs"
        )
    print()


def print_asgi(results: dict) -> None:
    asgi = results["asgi"]
    print("### ASGI: uvicorn (uvloop, httptools), async views, same workers and load")
    print()
    print(
        "| mix | system | req/s | vs django-redis | vs its gunicorn run | p50 ms | p99 ms | "
        "p99.9 ms | hit rate | stale reads | 5xx | socket err | app CPU µs/req |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mix, rows in asgi.items():
        for system, c in rows.items():
            sync = results[mix][system]["rps"]
            print(
                f"| {mix} | {SYSTEMS[system]} | {fmt(c['rps'])} | {c['vs']['djredis']:.2f}x | "
                f"{c['rps'] / sync:.2f}x | {fmt(c['p50_ms'], 2)} | {fmt(c['p99_ms'], 1)} | "
                f"{fmt(c['p999_ms'], 1)} | {fmt(c['hit_rate'] * 100, 1)} % | "
                f"{c['stale']} of {c['reads']:,} | {c['status_errors']} | {c['socket_errors']} | "
                f"{fmt(c['app_cpu_us'])} |"
            )
    print()
    print(
        "  (vs django-redis: median of the rounds' ratios; vs its gunicorn run: medians of two "
        "runs minutes apart, not paired)"
    )
    print()


def fault_table(cfg: Cfg, fault: dict) -> list[tuple[int, int, int, int]]:
    # Whole seconds of the run only: wrk's last responses fall into a partial second after it.
    tl, start = fault["timeline"], int(fault["start"])
    last = start + cfg.fault_seconds - 1
    return [
        (t - start, tl["tl_ok"].get(t, 0), tl["tl_5xx"].get(t, 0), tl["tl_other"].get(t, 0))
        for t in range(start, last + 1)
    ]


def print_fault(cfg: Cfg, fault: dict, rows: list[tuple[int, int, int, int]], variant: str) -> None:
    ev = fault["events"]
    print(
        f"### fault run ({variant}): TierCache + L1 over 3 partitions, 95/5, one partition "
        "SIGKILLed at "
        f"{ev.get('kill', float('nan')):.1f} s, restarted (empty) at "
        f"{ev.get('restart', float('nan')):.1f} s"
    )
    print()
    print("| second | ok/s | 5xx/s | other/s | |")
    print("|---:|---:|---:|---:|---|")
    for rel, ok, e5, other in rows:
        mark = ""
        if "kill" in ev and int(ev["kill"]) == rel:
            mark = "partition killed"
        if "restart" in ev and int(ev["restart"]) == rel:
            mark = "partition restarted"
        print(f"| {rel} | {ok} | {e5} | {other} | {mark} |")
    print()
    print(
        f"  total: {fault['requests']:,} requests, {fault['status_errors']} non-2xx, "
        f"{fault['socket_errors']} socket errors, {fault['stale']} stale of {fault['reads']:,} "
        f"reads, hit rate {fault['hit_rate']:.1%}, p99 {fault['p99_ms']:.1f} ms, "
        f"p99.9 {fault['p999_ms']:.1f} ms"
    )
    print()


def plot_fault(
    cfg: Cfg, fault: dict, rows: list[tuple[int, int, int, int]], variant: str
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  matplotlib is not installed: no fault.png")
        return None
    xs = [r[0] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.plot(xs, [r[1] for r in rows], marker="o", label="2xx/s")
    top.set_ylabel("responses/s")
    top.set_ylim(bottom=0)
    bottom.bar(xs, [r[2] for r in rows], color="tab:red", label="5xx/s")
    bottom.bar(
        xs, [r[3] for r in rows], bottom=[r[2] for r in rows], color="tab:orange", label="other/s"
    )
    bottom.set_ylabel("errors/s")
    bottom.set_xlabel("seconds since the load started")
    bottom.set_ylim(bottom=0, top=max([1] + [r[2] + r[3] for r in rows]) * 1.2)
    for ax in (top, bottom):
        for name, color in (("kill", "red"), ("restart", "green")):
            if name in fault["events"]:
                ax.axvline(
                    fault["events"][name], color=color, linestyle="--", label=f"partition {name}"
                )
        ax.legend(loc="best", fontsize=8)
    top.set_title(
        f"TierCache + L1, 3 partitions ({variant}), 95/5: one partition SIGKILLed, restarted"
    )
    fig.tight_layout()
    path = cfg.out / ("fault-witness.png" if variant == "witness" else "fault.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def targets(results: dict, faults: dict) -> tuple[list[tuple[str, bool, str]], list[str]]:
    """The issue's targets on the 95/5 mix; req/s ratios are the paired medians (print_mix)."""
    mix, read, asgi = results["95/5"], results["read-only"], results["asgi"]
    l1, dr, co = mix["tier_l1"], mix["djredis"], mix["cacheops"]
    vs = l1["vs"]
    checks = [
        (
            "95/5: TierCache + L1 >= 1.3x django-redis req/s",
            vs["djredis"] >= 1.3,
            f"{vs['djredis']:.2f}x",
        ),
        (
            "95/5: TierCache + L1 >= 1.0x django-cacheops req/s",
            vs["cacheops"] >= 1.0,
            f"{vs['cacheops']:.2f}x",
        ),
        (
            "95/5: TierCache + L1 p99 below django-redis'",
            l1["p99_ms"] < dr["p99_ms"],
            f"{l1['p99_ms']:.1f} vs {dr['p99_ms']:.1f} ms",
        ),
        (
            "95/5: TierCache + L1 p99 below django-cacheops'",
            l1["p99_ms"] < co["p99_ms"],
            f"{l1['p99_ms']:.1f} vs {co['p99_ms']:.1f} ms",
        ),
        (
            "95/5: TierCache + L1 zero stale reads",
            l1["stale"] == 0,
            f"{l1['stale']} of {l1['reads']:,}",
        ),
        ("95/5: TierCache + L1 hit rate >= 80 %", l1["hit_rate"] >= 0.8, f"{l1['hit_rate']:.1%}"),
    ]
    for variant, fault in faults.items():
        checks.append(
            (
                f"partition kill ({variant}): zero 5xx",
                fault["status_errors"] == 0,
                f"{fault['status_errors']} (socket errors {fault['socket_errors']})",
            )
        )
    headline = [
        f"rps_l1/djredis={vs['djredis']:.2f}",
        f"rps_l1/cacheops={vs['cacheops']:.2f}",
        f"rps_l1/django={vs['django']:.2f}",
        f"rps_l1/nocache={vs['nocache']:.2f}",
        f"rps_tier/djredis={mix['tier']['vs']['djredis']:.2f}",
        f"rps_ceiling/djredis={mix['ceiling']['vs']['djredis']:.2f}",
        f"rps_l1/ceiling={vs['ceiling']:.2f}",
        f"read_rps_l1/djredis={read['tier_l1']['vs']['djredis']:.2f}",
        f"p99_l1/djredis={l1['p99_ms'] / dr['p99_ms']:.2f}",
        f"p99_l1/cacheops={l1['p99_ms'] / co['p99_ms']:.2f}",
        f"hit_l1={l1['hit_rate']:.3f}",
        f"stale_l1={l1['stale']}",
        f"stale_tier={mix['tier']['stale']}",
        f"stale_django={mix['django']['stale']}",
        f"stale_djredis={dr['stale']}",
        f"stale_cacheops={co['stale']}",
        f"asgi_rps_l1/djredis={asgi['95/5']['tier_l1']['vs']['djredis']:.2f}",
        f"asgi_read_rps_l1/djredis={asgi['read-only']['tier_l1']['vs']['djredis']:.2f}",
        f"asgi_stale_l1={asgi['95/5']['tier_l1']['stale']}",
        f"fault_5xx={faults['no witness']['status_errors']}",
        f"fault_witness_5xx={faults['witness']['status_errors']}",
    ]
    return checks, headline


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in (
        "Django",
        "gunicorn",
        "uvicorn",
        "django-redis",
        "django-cacheops",
        "redis",
        "hiredis",
        "psycopg",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    import django_tiercache

    out["django_tiercache"] = (
        f"{django_tiercache.__version__} ({Path(django_tiercache.__file__).parent})"
    )
    for name, cmd in (
        ("redis-server", ["redis-server", "--version"]),
        ("wrk", ["wrk", "--version"]),
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        out[name] = (
            (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"
        )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        out["postgresql"] = cursor.fetchone()[0]
    return out


def view_cost_child(system: str, redis_url: str, schema: str, shm: str, products: int) -> None:
    """In this process, no HTTP: the shop's WSGI app called directly for Zipf-chosen reads."""
    import io
    import random

    os.environ.update(
        DJANGO_SETTINGS_MODULE="benchmarks.loadapp.settings",
        LOAD_SYSTEM=system,
        LOAD_REDIS=redis_url,
        LOAD_SCHEMA=schema,
        LOAD_SHM=shm,
        LOAD_PRODUCTS=str(products),
    )
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    weights = [1 / k for k in range(1, products + 1)]
    paths = [f"/r/{pk}/" for pk in random.choices(range(1, products + 1), weights, k=1500)]

    def call(path: str) -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
        }
        body = app(environ, lambda status, headers: None)
        b"".join(body)
        body.close()

    for path in paths:  # this process's L1 (if any) fills, the connections open
        call(path)
    cpu, wall = [], []
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        for path in paths:
            call(path)
        wall.append((time.perf_counter() - t0) / len(paths) * 1e6)
        cpu.append((time.process_time() - c0) / len(paths) * 1e6)
    writes = [f"/w/{pk}/" for pk in random.choices(range(1, products + 1), weights, k=150)]
    t0, c0 = time.perf_counter(), time.process_time()
    for path in writes:
        call(path)
    write_wall = (time.perf_counter() - t0) / len(writes) * 1e6
    write_cpu = (time.process_time() - c0) / len(writes) * 1e6
    print(
        "VIEWCOST "
        + json.dumps(
            {
                "wall_us": min(wall),
                "cpu_us": min(cpu),
                "write_wall_us": write_wall,
                "write_cpu_us": write_cpu,
            }
        )
    )


def view_costs(cfg: Cfg, servers: dict[str, Server]) -> dict[str, dict]:
    out = {}
    for system, server in servers.items():
        url = ",".join(f"redis://127.0.0.1:{p}/0" for p in server.redis_ports) or "redis://-"
        done = subprocess.run(
            [sys.executable, __file__, "--view-cost-child", system, url, server.schema, server.shm],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "LOAD_DATABASE_URL": cfg.database_url,
                "LOAD_PRODUCTS": str(cfg.products),
            },
        )
        line = [x for x in done.stdout.splitlines() if x.startswith("VIEWCOST ")]
        nan = float("nan")
        keys = ("wall_us", "cpu_us", "write_wall_us", "write_cpu_us")
        out[system] = json.loads(line[0][9:]) if line else dict.fromkeys(keys, nan)
    return out


def main() -> int:
    if sys.argv[1:2] == ["--view-cost-child"]:
        system, url, schema, shm = sys.argv[2:6]
        view_cost_child(system, url, schema, shm, int(os.environ.get("LOAD_PRODUCTS", "5000")))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="1 round of 5 s per cell, shorter runs elsewhere"
    )
    ap.add_argument(
        "--seconds", type=float, help="seconds per round of the read-only and 95/5 mixes"
    )
    ap.add_argument("--rounds", type=int, help="rounds of the read-only and 95/5 mixes")
    ap.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    ap.add_argument("--products", type=int, default=3000)
    ap.add_argument("--zipf", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "build" / "bench-load"))
    ap.add_argument(
        "--database-url",
        default=os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dev_b"),
    )
    ap.add_argument("--json", help="also write the results here (default: OUT/results.json)")
    args = ap.parse_args()
    quick = args.quick
    cfg = Cfg(
        seconds=args.seconds or (5 if quick else 3),
        rounds=args.rounds or (1 if quick else 3),
        burst_seconds=6,
        warmup=2 if quick else 3,
        workers=args.workers,
        products=args.products,
        zipf=args.zipf,
        scaling_seconds=3,
        fault_seconds=12 if quick else 20,
        fault_kill_at=4 if quick else 6,
        fault_down=3 if quick else 4,
        database_url=args.database_url,
        out=Path(args.out),
        quick=quick,
    )
    if not shutil.which("wrk"):
        print(
            "wrk not found on PATH (apt-get install wrk; make bench-load installs it)",
            file=sys.stderr,
        )
        return 2
    cfg.out.mkdir(parents=True, exist_ok=True)
    for pattern in ("gunicorn-*.log", "uvicorn-*.log"):
        for old in cfg.out.glob(pattern):
            old.unlink()
    began = time.monotonic()
    setup_django(cfg)
    schemas = [f"load_{s}" for s in SYSTEMS] + ["load_fault", "load_fault_witness"]
    info = {
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "load_average_at_start": os.getloadavg(),
        "versions": versions(),
    }
    print("django_tiercache load benchmark (benchmarks/bench_load.py)")
    print(
        f"  machine  : {info['machine']}; load average at start "
        + ", ".join(f"{x:.2f}" for x in info["load_average_at_start"])
    )
    print("  versions : " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(
        f"  load     : wrk 1 thread, 2 connections per worker, {cfg.products:,} products, "
        f"Zipf s={cfg.zipf}; gunicorn sync, {cfg.workers} workers; PostgreSQL, one schema per "
        "system; one redis-server per system"
    )
    print(
        f"  cells    : read-only and 95/5 {cfg.rounds} x {cfg.seconds:g} s (systems interleaved), "
        f"write burst {cfg.burst_seconds} s, warm-up {cfg.warmup:g} s; "
        f"scaling {cfg.scaling_seconds:g} s; "
        f"fault run {cfg.fault_seconds} s" + ("  (QUICK)" if quick else "")
    )
    print(flush=True)
    seed(cfg, schemas)
    try:
        with contextlib.ExitStack() as stack:
            results, faults = run_all(cfg, stack)
    finally:
        drop_schemas(schemas)
    elapsed = time.monotonic() - began
    print()
    for mix in ("read-only", "95/5", "write burst"):
        print_mix(mix, results[mix])
    print_view_costs(results)
    print_scaling(results["scaling"])
    print_asgi(results)
    for variant, fault in faults.items():
        rows = fault_table(cfg, fault)
        print_fault(cfg, fault, rows, variant)
        png = plot_fault(cfg, fault, rows, variant)
        if png:
            print(f"  plot: {png}")
            print()
    checks, headline = targets(results, faults)
    print()
    print("targets (95/5 mix, gunicorn; issue 25)")
    for label, ok, value in checks:
        print(f"  [{'PASS' if ok else 'MISS'}] {label}: {value}")
    print()
    for mix in [*results.values(), *results["asgi"].values()]:
        for c in mix.values():
            c.pop("timeline", None)
    payload = {
        "info": info,
        "settings": {k: str(v) for k, v in vars(cfg).items()},
        "results": results,
        "fault": faults,
        "targets": checks,
        "elapsed_s": round(elapsed, 1),
    }
    json_path = Path(args.json) if args.json else cfg.out / "results.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"  elapsed {elapsed:.0f} s; results in {json_path}")
    print(" ".join(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
