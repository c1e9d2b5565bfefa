"""Single flight when its loader dies: how soon the waiters are answered, and how many load.

    python benchmarks/bench_single_flight_kill.py [--processes 8] [--threads 3]

One process starts a get_or_set() whose loader never returns (it holds the
claim); ``--processes - 1`` more processes of ``--threads`` threads each then
miss the same key and wait; the loader is SIGKILLed 0.5 s later. Prints the
seconds from the kill to the last waiter's answer and the loads after the kill
(targets: within 2 s, at most 2). Redis db 9 on 127.0.0.1:6379, the default
SINGLE_FLIGHT options.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from tests.test_l1 import Worker  # noqa: E402

URL = "redis://127.0.0.1:6379/9"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()
    prefix = f"sfkill{uuid.uuid4().hex[:8]}"
    counter = f"{prefix}:loads"
    client = redis.Redis.from_url(URL)
    workers = [Worker() for _ in range(args.processes)]
    try:
        for worker in workers:
            assert worker("build", URL, prefix, {})
        loader, *waiters = workers
        loader.send("hang_loading", "k", URL, counter)
        while int(client.get(counter) or 0) < 1:
            time.sleep(0.01)
        for waiter in waiters:
            waiter.send("single_flight", "k", args.threads, URL, counter)
        time.sleep(0.5)
        killed = time.monotonic()
        os.kill(loader.proc.pid, signal.SIGKILL)
        answers = [waiter.receive() for waiter in waiters]
        elapsed = time.monotonic() - killed
        loads_after = int(client.get(counter) or 0) - 1
        callers = sum(len(a) for a in answers)
        print(f"{callers} waiters in {len(waiters)} processes, loader SIGKILLed 0.5 s in")
        print(f"  last waiter answered  {elapsed:6.2f} s after the kill   (target <= 2)")
        print(f"  loads after the kill  {loads_after:6d}            (target <= 2)")
    finally:
        for worker in workers:
            worker.close()
        client.delete(counter)


if __name__ == "__main__":
    main()
