"""A chaos loop for the stress test: what production Redis does to a cache's metadata.

While writer and reader processes race (tests/stress.py), the loop takes, at
random, one of these actions against one partition at a time:

- ``delete``: delete a few random keys of the cache's metadata, of every kind
  (tag tokens, the generation, leases, the meta hash with locks, fences, grants
  and epochs), as an eviction or someone's stray DEL would;
- ``restart``: stop the server and start it empty (no persistence);
- ``restore``: kill the server and start it from a snapshot taken moments
  earlier (persistence restores an older state);
- ``fill_lru`` / ``fill_noeviction``: set maxmemory just above what is used under
  that policy, fill the server to it, hold it full for a moment, then free it.

Each action can be switched off (``actions=``), so that a run covers one rule.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter

from redis.exceptions import RedisError

from tests.redis_servers import RedisServer

ACTIONS = ("delete", "restart", "restore", "fill_lru", "fill_noeviction")


class Chaos:
    def __init__(self, servers: list[RedisServer], prefix: str, actions=ACTIONS, seed: int = 7):
        self.servers, self.prefix, self.actions = servers, prefix, tuple(actions)
        self.random = random.Random(seed)  # noqa: S311 - not cryptographic
        self.done: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Chaos:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for server in self.servers:
            server.ensure_running()
            _free(server)

    def _loop(self) -> None:
        time.sleep(0.5)  # let the processes warm the cache first
        while not self._stop.is_set():
            action = self.random.choice(self.actions)
            server = self.random.choice(self.servers)
            with contextlib.suppress(RedisError, OSError):
                getattr(self, action)(server)
                self.done[action] += 1
            self._stop.wait(self.random.uniform(0.2, 0.6))

    def delete(self, server: RedisServer) -> None:
        raw = server.client()
        keys = list(raw.scan_iter(match=f"{self.prefix}:_tc:*", count=1000))
        kinds = {}
        for key in keys:  # one key of each kind: token, gen, lease, meta ...
            kinds.setdefault(key.split(b":_tc:")[1].split(b":")[0], []).append(key)
        for same_kind in kinds.values():
            if self.random.random() < 0.5:
                raw.delete(self.random.choice(same_kind))

    def restart(self, server: RedisServer) -> None:
        (server.directory / "dump.rdb").unlink(missing_ok=True)
        server.stop()
        server.start()

    def restore(self, server: RedisServer) -> None:
        server.client().save()
        self._stop.wait(self.random.uniform(0.3, 1.0))  # writes move on meanwhile
        server.process.kill()  # no SHUTDOWN SAVE: the older snapshot comes back
        server.process.wait()
        server.start()
        (server.directory / "dump.rdb").unlink(missing_ok=True)

    def fill_lru(self, server: RedisServer) -> None:
        self._fill(server, "allkeys-lru")

    def fill_noeviction(self, server: RedisServer) -> None:
        self._fill(server, "noeviction")

    def _fill(self, server: RedisServer, policy: str) -> None:
        raw = server.client()
        raw.config_set("maxmemory-policy", policy)
        raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 2**20)
        with contextlib.suppress(RedisError):
            for i in range(300):
                raw.set(f"chaos-filler:{i}", "x" * 10_000)
        self._stop.wait(self.random.uniform(0.3, 1.0))
        _free(server)


def _free(server: RedisServer) -> None:
    raw = server.client()
    raw.config_set("maxmemory", 0)
    raw.config_set("maxmemory-policy", "noeviction")
    fillers = list(raw.scan_iter(match="chaos-filler:*", count=1000))
    if fillers:
        raw.delete(*fillers)
