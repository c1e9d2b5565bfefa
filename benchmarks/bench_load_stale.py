"""Stale reads under load, on one system only: bench_load.py's 95/5 cell, repeated.

    python benchmarks/bench_load_stale.py [--system tier_l1] [--rounds 6] [--seconds 10]

The same app, server, load and stale check as ``make bench-load`` (benchmarks/loadapp: a read
first takes the highest version committed for its product, from shared memory written after the
write returned, then reads; an older version is stale), without the other systems, the scaling
and the fault runs: a few minutes to see whether a system serves stale reads at all. It prints
one line per round and, last, the totals as name=value pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import _servers, bench_load  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", default="tier_l1", choices=list(bench_load.SYSTEMS))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--write-pct", type=float, default=5)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--asgi", action="store_true", help="uvicorn and the async views")
    ap.add_argument("--products", type=int, default=3000)
    ap.add_argument("--out", default=str(ROOT / "build" / "bench-load-stale"))
    ap.add_argument(
        "--database-url",
        default=os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dev_b"),
    )
    args = ap.parse_args()
    cfg = bench_load.Cfg(
        seconds=args.seconds,
        rounds=args.rounds,
        burst_seconds=6,
        warmup=3,
        workers=args.workers,
        products=args.products,
        zipf=1.0,
        scaling_seconds=3,
        fault_seconds=0,
        fault_kill_at=0,
        fault_down=0,
        database_url=args.database_url,
        out=Path(args.out),
        quick=False,
    )
    cfg.out.mkdir(parents=True, exist_ok=True)
    bench_load.setup_django(cfg)
    schema = f"load_stale_{args.system}"
    bench_load.seed(cfg, [schema])
    reads = stale = 0
    try:
        with contextlib.ExitStack() as stack:
            ports = stack.enter_context(_servers.redis_servers(1))
            redis_ports = [] if args.system == "nocache" else ports
            server = bench_load.Server(
                cfg, args.system, schema, redis_ports, cfg.workers, asgi=args.asgi
            )
            stack.callback(server.stop)
            server.wait_ready()
            if args.system.startswith("tier"):
                bench_load.wait_quiet_over(server)
            bench_load.warm(cfg, server, 0)
            for r in range(cfg.rounds):
                c = bench_load.measure(cfg, server, cfg.seconds, args.write_pct)
                reads, stale = reads + c["reads"], stale + c["stale"]
                print(
                    f"  round {r + 1}/{cfg.rounds} {args.system} {c['rps']:7.0f} req/s "
                    f"hit {c['hit_rate']:.0%}  reads {c['reads']}  writes {c['writes']}  "
                    f"stale {c['stale']}",
                    flush=True,
                )
    finally:
        bench_load.drop_schemas([schema])
    print(f"system={args.system} rounds={cfg.rounds} reads={reads} stale={stale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
