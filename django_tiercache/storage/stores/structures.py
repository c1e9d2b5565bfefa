"""Redis hashes, sets and sorted sets in a memory:// partition.

The commands django-redis exposes on its cache (``hset``, ``sadd``, ``zadd``
...), with redis-py's method names, arguments and reply shapes (members and
fields as bytes, scores as floats), so that structures.py drives a memory://
partition exactly as it drives a Redis client. A structure lives in the
partition's space under its key like an entry, expires like one, and reads as
a miss to get(); a command on a key of another kind raises the error Redis
answers (WRONGTYPE).
"""

from __future__ import annotations

import fnmatch
import random
from typing import Any

from redis.exceptions import ResponseError

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


class Structure:
    """What a memory:// space holds for a hash (dict), a set (set) or a sorted set (dict)."""

    __slots__ = ("kind", "data")

    def __init__(self, kind: str, data: Any):
        self.kind, self.data = kind, data


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def _flat(keys: Any, args: tuple) -> list:
    """redis-py's list_or_args: a list of keys, or keys as arguments."""
    return [*keys, *args] if isinstance(keys, list | tuple) else [keys, *args]


def _bound(value: Any, low: bool) -> tuple[float, bool]:
    """A ZRANGEBYSCORE bound: (score, exclusive)."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    exclusive = text.startswith("(")
    text = text.lstrip("(")
    if text in ("-inf", "+inf", "inf"):
        return (float("-inf") if text == "-inf" else float("inf")), exclusive
    return float(text), exclusive


def _within(score: float, low: tuple[float, bool], high: tuple[float, bool]) -> bool:
    above = score > low[0] if low[1] else score >= low[0]
    below = score < high[0] if high[1] else score <= high[0]
    return above and below


def _index_slice(items: list, start: int, end: int) -> list:
    n = len(items)
    start = max(start + n if start < 0 else start, 0)
    end = end + n if end < 0 else end
    return items[start : end + 1] if start <= end else []


class MemoryStructures:
    """The commands on one space; the caller holds the space's lock."""

    def __init__(self, space: Any):
        self.space = space

    def _get(self, key: str, kind: str, create: bool = False) -> Any:
        value = self.space.get(key)
        if value is None:
            if not create:
                return None
            value = Structure(kind, set() if kind == "set" else {})
            self.space.set(key, value)
            return value.data
        if not isinstance(value, Structure) or value.kind != kind:
            raise ResponseError(WRONGTYPE)
        return value.data

    def _dropped_if_empty(self, key: str, data: Any) -> None:
        if data is not None and not data:  # Redis deletes an empty structure
            self.space.delete(key)

    def _store(self, key: str, kind: str, data: Any) -> int:
        self.space.delete(key)
        if data:
            self.space.set(key, Structure(kind, data))
        return len(data)

    # -- keys of any kind --

    def delete(self, *keys: str) -> int:
        return sum(self.space.delete(key) for key in keys)

    def exists(self, *keys: str) -> int:
        return sum(self.space.get(key) is not None for key in keys)

    def type(self, key: str) -> bytes:
        value = self.space.get(key)
        if value is None:
            return b"none"
        return value.kind.encode() if isinstance(value, Structure) else b"string"

    def pttl(self, key: str) -> int:
        return self.space.pttl(key)

    def pexpire(self, key: str, ms: int) -> bool:
        if self.space.get(key) is None:
            return False
        if ms <= 0:
            self.space.delete(key)
        else:
            self.space.expire(key, ms)
        return True

    def persist(self, key: str) -> bool:
        if self.space.pttl(key) < 0:
            return False
        self.space.expire(key, None)
        return True

    # -- hashes --

    def hset(self, name, key=None, value=None, mapping=None, items=None) -> int:
        pairs = {} if key is None else {key: value}
        pairs.update(mapping or {})
        if items:
            pairs.update(zip(items[::2], items[1::2], strict=True))
        if not pairs:
            raise ResponseError("wrong number of arguments for 'hset' command")
        data = self._get(name, "hash", create=True)
        added = 0
        for field, field_value in pairs.items():
            field = _bytes(field)
            added += field not in data
            data[field] = _bytes(field_value)
        return added

    def _removed(self, name: str, kind: str, items: tuple) -> int:
        """HDEL and ZREM: drop these fields or members; how many there were."""
        data = self._get(name, kind)
        if data is None:
            return 0
        removed = sum(data.pop(_bytes(item), None) is not None for item in items)
        self._dropped_if_empty(name, data)
        return removed

    def hdel(self, name, *keys) -> int:
        return self._removed(name, "hash", keys)

    def hlen(self, name) -> int:
        return len(self._get(name, "hash") or {})

    def hkeys(self, name) -> list[bytes]:
        return list(self._get(name, "hash") or {})

    def hexists(self, name, key) -> bool:
        return _bytes(key) in (self._get(name, "hash") or {})

    def hget(self, name, key) -> bytes | None:
        return (self._get(name, "hash") or {}).get(_bytes(key))

    def hgetall(self, name) -> dict[bytes, bytes]:
        return dict(self._get(name, "hash") or {})

    # -- sets --

    def sadd(self, name, *values) -> int:
        data = self._get(name, "set", create=True)
        before = len(data)
        data.update(_bytes(v) for v in values)
        return len(data) - before

    def srem(self, name, *values) -> int:
        data = self._get(name, "set")
        if data is None:
            return 0
        removed = 0
        for value in map(_bytes, values):
            if value in data:
                data.discard(value)
                removed += 1
        self._dropped_if_empty(name, data)
        return removed

    def scard(self, name) -> int:
        return len(self._get(name, "set") or ())

    def smembers(self, name) -> set[bytes]:
        return set(self._get(name, "set") or ())

    def sismember(self, name, value) -> bool:
        return _bytes(value) in (self._get(name, "set") or ())

    def smismember(self, name, values, *args) -> list[bool]:
        data = self._get(name, "set") or set()
        return [_bytes(v) in data for v in _flat(values, args)]

    def _combined(self, keys: list, how: str) -> set[bytes]:
        sets = [self.smembers(k) for k in keys]
        if how == "diff":
            return sets[0].difference(*sets[1:])
        if how == "inter":
            return sets[0].intersection(*sets[1:])
        return set().union(*sets)

    def sdiff(self, keys, *args) -> set[bytes]:
        return self._combined(_flat(keys, args), "diff")

    def sinter(self, keys, *args) -> set[bytes]:
        return self._combined(_flat(keys, args), "inter")

    def sunion(self, keys, *args) -> set[bytes]:
        return self._combined(_flat(keys, args), "union")

    def sdiffstore(self, dest, keys, *args) -> int:
        return self._store(dest, "set", self.sdiff(keys, *args))

    def sinterstore(self, dest, keys, *args) -> int:
        return self._store(dest, "set", self.sinter(keys, *args))

    def sunionstore(self, dest, keys, *args) -> int:
        return self._store(dest, "set", self.sunion(keys, *args))

    def smove(self, src, dst, value) -> bool:
        source = self._get(src, "set")
        self._get(dst, "set")  # WRONGTYPE before anything moves
        value = _bytes(value)
        if not source or value not in source:
            return False
        source.discard(value)
        self._dropped_if_empty(src, source)
        self._get(dst, "set", create=True).add(value)
        return True

    def spop(self, name, count=None) -> Any:
        data = self._get(name, "set")
        if not data:
            return None if count is None else []
        chosen = random.sample(sorted(data), min(1 if count is None else count, len(data)))
        data.difference_update(chosen)
        self._dropped_if_empty(name, data)
        return chosen[0] if count is None else chosen

    def srandmember(self, name, number=None) -> Any:
        data = sorted(self._get(name, "set") or ())
        if number is None:
            return random.choice(data) if data else None  # noqa: S311 - as SRANDMEMBER
        if number < 0:  # Redis: may repeat members
            return [random.choice(data) for _ in range(-number)] if data else []  # noqa: S311
        return random.sample(data, min(number, len(data)))

    def sscan(self, name, cursor=0, match=None, count=None) -> tuple[int, list[bytes]]:
        members = sorted(self._get(name, "set") or ())
        if match is not None:
            pattern = match.decode() if isinstance(match, bytes) else match
            members = [m for m in members if fnmatch.fnmatchcase(m.decode("latin-1"), pattern)]
        return 0, members

    # -- sorted sets --

    def zadd(self, name, mapping, nx=False, xx=False, ch=False, incr=False, gt=False, lt=False):
        data = self._get(name, "zset", create=not xx)
        if data is None:
            return None if incr else 0
        changed = added = 0
        result = None
        for member, score in mapping.items():
            member, score = _bytes(member), float(score)
            old = data.get(member)
            if (old is None and xx) or (old is not None and nx):
                continue
            new = old + score if incr and old is not None else score
            if old is not None and ((gt and new <= old) or (lt and new >= old)):
                continue
            data[member] = new
            result = new
            added += old is None
            changed += old is None or old != new
        self._dropped_if_empty(name, data)
        if incr:
            return result
        return changed if ch else added

    def zcard(self, name) -> int:
        return len(self._get(name, "zset") or {})

    def zscore(self, name, value) -> float | None:
        return (self._get(name, "zset") or {}).get(_bytes(value))

    def zincrby(self, name, amount, value) -> float:
        data = self._get(name, "zset", create=True)
        member = _bytes(value)
        data[member] = data.get(member, 0.0) + float(amount)
        return data[member]

    def zrem(self, name, *values) -> int:
        return self._removed(name, "zset", values)

    def _ordered(self, name: str, desc: bool = False) -> list[tuple[bytes, float]]:
        data = self._get(name, "zset") or {}
        return sorted(data.items(), key=lambda item: (item[1], item[0]), reverse=desc)

    @staticmethod
    def _reply(items: list, withscores: bool, score_cast_func: Any = float) -> list:
        if withscores:
            return [(member, score_cast_func(score)) for member, score in items]
        return [member for member, _ in items]

    def zcount(self, name, min, max) -> int:
        low, high = _bound(min, True), _bound(max, False)
        return sum(_within(score, low, high) for _, score in self._ordered(name))

    def zrank(self, name, value, withscore=False) -> Any:
        member = _bytes(value)
        for rank, (item, score) in enumerate(self._ordered(name)):
            if item == member:
                return [rank, score] if withscore else rank
        return None

    def zrange(self, name, start, end, desc=False, withscores=False, score_cast_func=float):
        items = _index_slice(self._ordered(name, desc), start, end)
        return self._reply(items, withscores, score_cast_func)

    def zrevrange(self, name, start, end, withscores=False, score_cast_func=float):
        return self.zrange(name, start, end, True, withscores, score_cast_func)

    def zrangebyscore(
        self, name, min, max, start=None, num=None, withscores=False, score_cast_func=float
    ):
        low, high = _bound(min, True), _bound(max, False)
        items = [i for i in self._ordered(name) if _within(i[1], low, high)]
        if start is not None and num is not None:
            items = items[start:] if num < 0 else items[start : start + num]
        return self._reply(items, withscores, score_cast_func)

    def zrevrangebyscore(
        self, name, max, min, start=None, num=None, withscores=False, score_cast_func=float
    ):
        low, high = _bound(min, True), _bound(max, False)
        items = [i for i in self._ordered(name, True) if _within(i[1], low, high)]
        if start is not None and num is not None:
            items = items[start:] if num < 0 else items[start : start + num]
        return self._reply(items, withscores, score_cast_func)

    def zremrangebyscore(self, name, min, max) -> int:
        low, high = _bound(min, True), _bound(max, False)
        data = self._get(name, "zset")
        if data is None:
            return 0
        doomed = [m for m, score in data.items() if _within(score, low, high)]
        for member in doomed:
            del data[member]
        self._dropped_if_empty(name, data)
        return len(doomed)

    def _pop(self, name, count, desc: bool) -> list:
        data = self._get(name, "zset")
        if not data:
            return []
        items = self._ordered(name, desc)[: 1 if count is None else count]
        for member, _ in items:
            del data[member]
        self._dropped_if_empty(name, data)
        return items

    def zpopmax(self, name, count=None) -> list:
        return self._pop(name, count, True)

    def zpopmin(self, name, count=None) -> list:
        return self._pop(name, count, False)

    # -- a whole set written at once (structures.py, across partitions) --

    def replace_set(self, key: str, members: list[bytes]) -> int:
        return self._store(key, "set", set(members))
