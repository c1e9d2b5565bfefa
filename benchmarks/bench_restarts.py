"""How long tagged writes are refused after one partition of two or three restarts empty.

    python benchmarks/bench_restarts.py                  # TAG_LEASE 3 s, lock horizon 30 s
    python benchmarks/bench_restarts.py --lease 1 --horizon 10

Starts two throw-away redis-server processes (free loopback ports, no
persistence), builds a TierCache over them, writes a tagged entry on each, then
restarts one of them empty (as a crash or a restart without persistence does)
and tries a tagged set() on each partition every 20 ms for the horizon and two
leases. Printed per partition: the first and the last second after the restart
at which a tagged write was refused (set() returned False), and how many were. Run
with two partitions without and with a witness (OPTIONS["WITNESS"] = "database", on a
SQLite file), and with three partitions without one.

The lock horizon is TIERCACHE["WRITE_LOCK_TIMEOUT"] (30 s by default), what the
model layer declares; a partition that lost its memory waits that long, since
the write locks it held are known nowhere else (see storage/tags.py). Its peers
wait that long too with two partitions and no witness: the fences it forgot were
kept nowhere else either.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
POLL_S = 0.02
FAST = {"SOCKET_TIMEOUT": 0.25, "SOCKET_CONNECT_TIMEOUT": 0.25, "BREAKER_COOLDOWN": 0.3}


def key_on(cache, partition: str, prefix: str) -> str:
    return next(
        f"{prefix}{i}" for i in range(10_000) if cache.partition_for(f"{prefix}{i}") == partition
    )


def one_run(servers, lease: float, horizon: float, witness: bool) -> list[tuple[str, list[float]]]:
    """Per partition, when (seconds after the last one restarted) a tagged write was refused."""
    from django_tiercache.backend import TierCache
    from django_tiercache.storage.hooks import declare_lock_horizon

    options = {"TAG_LEASE": lease, **FAST, **({"WITNESS": "database"} if witness else {})}
    cache = TierCache(
        [s.url for s in servers], {"KEY_PREFIX": f"b{uuid.uuid4().hex[:8]}", "OPTIONS": options}
    )
    peer = servers[-1]
    keys = {s.url: key_on(cache, s.url, "entry") for s in servers}
    for server in servers:
        cache.get(key_on(cache, server.url, "greeting"))
    declare_lock_horizon(f"{cache.key_prefix}:_tc:", horizon)
    for key in keys.values():
        assert cache.set(key, "before", tags=["t"]) is None, "a tagged write before the restart"
    peer.stop()
    peer.start()
    started = time.monotonic()
    roles = {f"healthy {i + 1}": s.url for i, s in enumerate(servers[:-1])}
    roles["restarted"] = peer.url
    refusals: dict[str, list[float]] = {role: [] for role in roles}
    while time.monotonic() < started + horizon + 2 * lease + 1:
        for role, url in roles.items():
            if cache.set(keys[url], "after", tags=["t"]) is False or cache.get(keys[url]) is None:
                refusals[role].append(time.monotonic() - started)
        time.sleep(POLL_S)
    cache.close()
    return [(role, times) for role, times in refusals.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lease", type=float, default=3.0, help="TAG_LEASE in seconds (default 3.0)"
    )
    parser.add_argument(
        "--horizon", type=float, default=30.0, help="write-lock horizon in seconds (default 30.0)"
    )
    args = parser.parse_args()
    database = Path(tempfile.mkdtemp()) / "witness.sqlite3"
    os.environ["TIERCACHE_TEST_SQLITE"] = str(database)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)
    from tests import redis_servers

    servers = redis_servers.start_servers(3, Path(tempfile.mkdtemp()))
    try:
        print(
            f"TAG_LEASE {args.lease:g} s, write-lock horizon {args.horizon:g} s, "
            f"polled every {POLL_S * 1000:g} ms"
        )
        print(
            f"{'partitions':<11} {'witness':<8} {'partition':<10} {'refused from':>13} "
            f"{'until':>8} {'refused':>8}"
        )
        for count, witness in ((2, False), (2, True), (3, False)):
            for role, times in one_run(servers[:count], args.lease, args.horizon, witness):
                span = (
                    f"{times[0]:>11.2f} s {times[-1]:>6.2f} s" if times else f"{'-':>13} {'-':>8}"
                )
                print(
                    f"{count:<11} {'yes' if witness else 'no':<8} {role:<10} {span} "
                    f"{len(times):>8,}"
                )
    finally:
        redis_servers.stop_servers(servers)


if __name__ == "__main__":
    main()
