"""Hot keys: a sampled, decayed, bounded record of the most read keys of a cache.

With ``OPTIONS["HOT_KEYS"]`` on, the record watches the cache as an observer
(storage/observers.py; ``observe`` is the factory TIERCACHE["OBSERVERS"]
names): every read's keys go to ``HotKeys.sample``, which keeps a fraction of
them (``SAMPLE``) in a counter in process memory; every ``FLUSH`` seconds a
short-lived thread sends the counts to Redis, so a read never waits for the
record. In Redis the record is:

- ``<prefix>:_tc:hot``         a sorted set, key -> score (estimated reads, decayed);
- ``<prefix>:_tc:hot:decayed`` when the scores were last decayed (ms);
- ``<prefix>:_tc:hot:origin``  key -> the warmer or model that produced it.

One script call per flush adds the counts, multiplies every score by
0.5 ** (elapsed / HALF_LIFE) (at most every HALF_LIFE / 100, whoever flushes,
so many processes do not decay it more) and trims the set to the ``SIZE``
hottest keys, dropping the origins of the keys it removes. The record lives on
every Redis partition (one restarted partition does not lose it), or on the
server ``LOCATION`` names, which can outlive a flush of the cache itself. On a
Redis Cluster every slot group keeps a copy below its own namespace
(``<prefix>:_tc:{<hashtag>}:hot``...), so that a script's three keys share a slot.

Origins are written by warming: a warmer that writes a key that is hot at the
time records itself as that key's producer. ``warm_cache --hot``
(warming/hot.py) reads the record, hottest first, and rewarms each key from its
producer; this package knows nothing of warming.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from django.core.exceptions import ImproperlyConfigured

from ..storage.observers import Building, Observer, observers_of
from ..storage.options import HOT_KEYS_DEFAULTS, redact, redis_scheme_url
from ..storage.stores.redis import RedisStore

MAX_KEYS_PER_FLUSH = 10_000  # the most counted keys sent per flush; the rest are noise

_paused = threading.local()


@contextlib.contextmanager
def not_sampled() -> Iterator[None]:
    """Reads made inside are not recorded (warming's own reads are not traffic)."""
    _paused.on = True
    try:
        yield
    finally:
        _paused.on = False


FLUSH_SCRIPT = """
local hot, stamp, origin = KEYS[1], KEYS[2], KEYS[3]
local size, half_life = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', stamp))
if not last then
  redis.call('SET', stamp, now)
elseif now - last >= half_life / 100 then
  redis.call('ZUNIONSTORE', hot, 1, hot, 'WEIGHTS', 0.5 ^ ((now - last) / half_life))
  redis.call('SET', stamp, now)
end
for i = 3, #ARGV, 2 do redis.call('ZINCRBY', hot, ARGV[i + 1], ARGV[i]) end
local extra = redis.call('ZCARD', hot) - size
if extra > 0 then
  local gone = redis.call('ZRANGE', hot, 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', hot, 0, extra - 1)
  for i = 1, #gone, 1000 do
    redis.call('HDEL', origin, unpack(gone, i, math.min(i + 999, #gone)))
  end
end
return extra
"""

# Origins only for keys still in the record, so the hash never outgrows it.
REMEMBER_SCRIPT = """
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""


class _Target:
    """One Redis server (or cluster slot group) holding a copy of the record, below ns."""

    def __init__(self, name: str, client_of: Callable[[], Any], ns: str, breaker: Any = None):
        # client_of() is called at the first use, not here: a cluster's client
        # connects when made, and a cache must build while its servers are down.
        self.name, self._client_of, self.breaker = name, client_of, breaker
        self.keys = [f"{ns}hot", f"{ns}hot:decayed", f"{ns}hot:origin"]
        self._ready: tuple[Any, Any, Any] | None = None  # the client and its scripts

    @property
    def client(self) -> Any:
        """The target's client (a RedisError if it cannot be made now)."""
        return self._made()[0]

    def flush(self, keys: list[str], args: list) -> Any:
        return self._made()[1](keys=keys, args=args)

    def remember(self, keys: list[str], args: list) -> Any:
        return self._made()[2](keys=keys, args=args)

    def _made(self) -> tuple[Any, Any, Any]:
        """The client and its two scripts, made at the first call."""
        if self._ready is None:
            client = self._client_of()
            flush, remember = (client.register_script(s) for s in (FLUSH_SCRIPT, REMEMBER_SCRIPT))
            self._ready = (client, flush, remember)
        return self._ready

    def usable(self) -> bool:
        return self.breaker is None or self.breaker.allows()


class HotKeys(Observer):
    """The hot-key record of one cache, shared by every thread of a process."""

    def __init__(self, targets: list[_Target], setting: dict[str, Any], policy: Any):
        self.targets, self.policy = targets, policy
        self.rate = float(setting["SAMPLE"])
        self.size = int(setting["SIZE"])
        self.half_life_ms = int(setting["HALF_LIFE"] * 1000)
        self.flush_every = float(setting["FLUSH"])
        self._pending: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._flushing = False
        self._due = time.monotonic() + self.flush_every

    # -- recording (the read path) --

    def read(self, made_keys: list[str], found: int) -> None:
        """The observer's read event: every read is a candidate sample, hit or miss."""
        self.sample(made_keys)

    def sample(self, made_keys: list[str]) -> None:
        """Count a read's keys, for a SAMPLE fraction of reads; flush when due."""
        if random.random() >= self.rate or getattr(_paused, "on", False):  # noqa: S311 - sampling
            return
        with self._lock:
            self._pending.update(made_keys)
            if self._flushing or time.monotonic() < self._due:
                return
            self._flushing = True
        threading.Thread(target=self._flush_in_background, name="tiercache-hot-keys").start()

    def forked(self) -> None:
        """In a forked child: the samples so far are the parent's to send, not ours."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._pending = Counter()
        self._flushing = False

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        finally:
            self._flushing = False

    def flush(self) -> None:
        """Send the counts gathered so far, decay and trim the record."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._due = time.monotonic() + self.flush_every
        args: list[Any] = [self.size, self.half_life_ms]
        for key, count in pending.most_common(MAX_KEYS_PER_FLUSH):
            args += [key, count / self.rate]  # an estimate of the reads, not of the samples
        for target in self.targets:
            self._call(target, "flush", lambda t: t.flush(keys=t.keys, args=args))

    # -- reading (warm_cache --hot) --

    def top(self, limit: int | None = None) -> list[tuple[str, float]]:
        """[(made key, score)], hottest first; the best score any copy of the record has."""
        scores: dict[str, float] = {}
        stop = (limit or self.size) - 1
        for target in self.targets:
            found = self._call(
                target, "read", lambda t: t.client.zrevrange(t.keys[0], 0, stop, withscores=True)
            )
            for member, score in found or ():
                key = member.decode()
                scores[key] = max(score, scores.get(key, 0.0))
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        return ranked[: limit or self.size]

    def members(self) -> set[str]:
        return {key for key, _ in self.top()}

    def origins(self, made_keys: list[str]) -> dict[str, list]:
        """{made key: [kind, name, key, pk]} for the keys whose producer is known."""
        found: dict[str, list] = {}
        for target in self.targets:
            todo = [k for k in made_keys if k not in found]
            if not todo:
                break
            values = self._call(
                target, "read", lambda t, todo=todo: t.client.hmget(t.keys[2], todo)
            )
            for key, value in zip(todo, values or (), strict=False):
                if value is not None:
                    found[key] = json.loads(value)
        return found

    def remember(self, origins: dict[str, str]) -> None:
        """Record who produced these keys (JSON [kind, name, key, pk]), if they are hot."""
        args = [part for item in origins.items() for part in item]
        for target in self.targets:
            self._call(
                target, "origin", lambda t: t.remember(keys=[t.keys[0], t.keys[2]], args=args)
            )

    def _call(self, target: _Target, what: str, call: Any) -> Any:
        if not target.usable():
            return None
        try:
            return call(target)
        except redis.RedisError as exc:
            self.policy.note(
                f"error:hot_keys_{what}",
                target.name,
                "hot-key record on %s: %s failed: %r",
                target.name,
                what,
                exc,
            )
            return None


def _client_of(store: Any) -> Callable[[], Any]:
    return lambda: store.client


_records: dict[tuple, HotKeys] = {}
_records_lock = threading.Lock()


def observe(building: Building) -> HotKeys | None:
    """The observer factory of hot keys: the record of the cache being built, or None
    when its ``OPTIONS["HOT_KEYS"]`` is off."""
    value = building.options["HOT_KEYS"]
    return hot_keys_for(building, value) if value else None


def hot_keys_for(building: Building, value: Any) -> HotKeys:
    """The process-wide record of a TierCache (built once per LOCATION, prefix and setting)."""
    setting = {**HOT_KEYS_DEFAULTS, **(value if isinstance(value, dict) else {})}
    setting["LOCATION"] = redis_scheme_url(setting["LOCATION"])  # valkey:// as redis://
    partitions, prefix = building.partitions, building.key_prefix
    identity = (tuple(p.url for p in partitions), prefix, repr(sorted(setting.items())))
    with _records_lock:
        record = _records.get(identity)
        if record is None:
            targets = _targets(partitions, setting["LOCATION"], f"{prefix}:_tc:")
            record = _records[identity] = HotKeys(targets, setting, building.policy)
        return record


def record_of(cache: Any) -> HotKeys | None:
    """The hot-key record a TierCache samples into, or None when it keeps none."""
    for observer in observers_of(cache):
        if isinstance(observer, HotKeys):
            return observer
    return None


def _after_fork_in_child() -> None:
    global _records_lock
    _records_lock = threading.Lock()
    for record in _records.values():
        record.forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _targets(partitions: Iterable[Any], location: str | None, ns: str) -> list[_Target]:
    if location is not None:
        client = redis.Redis.from_url(location, socket_timeout=1.0, socket_connect_timeout=0.5)
        return [_Target(redact(location), lambda: client, ns)]  # the name is logged and shown
    # A partition's namespace is ns itself, or ns and a slot group's "{hashtag}:".
    targets = [
        _Target(p.name, _client_of(p.store), p.store.ns, p.breaker)
        for p in partitions
        if isinstance(p.store, RedisStore)  # memory:// keeps no record
    ]
    if not targets:
        raise ImproperlyConfigured(
            "tiercache.E003: OPTIONS['HOT_KEYS'] needs a Redis partition to keep its record. "
            "HINT: Add a redis:// LOCATION, or set OPTIONS['HOT_KEYS'] = {'LOCATION': "
            "'redis://host:6379/0'}."
        )
    return targets
