"""django-redis' hash, set and sorted-set commands on TierCache.

Same names, signatures and return values as django-redis 7's ``RedisCache``
(``hset`` ... ``hexists``, ``sadd`` ... ``sunionstore``, ``zadd`` ...
``zscore``), on every kind of partition. A structure's key is made like any
other (KEY_PREFIX, VERSION) and lives on the partition that key maps to.

Members, hash values and sorted-set members are encoded as entries are
(integers as digits, anything else serialized and signed), but under one
signing context shared by every structure of the cache rather than bound to
their key: a member moved or copied to another set (``smove``,
``sunionstore``) stays valid there, and the same value always makes the same
bytes, which is what set membership compares. A member this application did
not sign is never unpickled: it is left out of the answer and counted
(``tampered`` in the statistics).

Commands on several keys (``sdiff``, ``sinter``, ``sunion``, their ``*store``
forms, ``smove``) run as one Redis command, atomically, when every key is on
one partition. Keys on several partitions are combined here instead: each
set is read with SMEMBERS and the result computed in Python (and written with
one MULTI/EXEC on the destination's partition). That answer is exact but not
atomic: a concurrent change to a source set may be seen or not. ``smove``
across partitions adds to the destination first and then removes from the
source (a crash between leaves the member in both, never in neither).

A partition that cannot be reached is handled as every other call: the error
is logged and counted, raised when RAISE_ERRORS is on, and the command
answers None. An error reply (WRONGTYPE: the key holds an entry, not a set)
always raises, as with django-redis.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .storage.codec import Tampered
from .storage.partition import UNREACHABLE, Partition

# The key every member is signed under (never a made key: those contain ":").
MEMBER_CONTEXT = "\x00structure-member"
SCAN_COUNT = 10  # django-redis' default COUNT hint for sscan


class Failed(Exception):
    """A partition did not answer and the error policy did not raise: answer None."""


class StructuresAPI:
    """Mixin of TierCache: its attributes and methods are TierCache's."""

    _partitions: list[Partition]
    _policy: Any
    _codec: Any
    _observer: Any
    _partition: Callable[[str], Partition]
    _delete: Callable[[list[str]], int]
    make_and_validate_key: Callable[..., str]

    # -- the plumbing --

    def _member(self, value: Any) -> bytes:
        return self._codec.encode(MEMBER_CONTEXT, value)

    def _members(self, values: Any) -> list[bytes]:
        return [self._member(value) for value in values]

    def _decoded(self, bodies: Any) -> list[Any]:
        """The values of stored members, leaving out (and counting) any we did not sign."""
        values = []
        for body in bodies:
            try:
                values.append(self._codec.decode(MEMBER_CONTEXT, body))
            except Tampered:
                self._policy.note(
                    "tampered", "-", "a structure member failed its signature check: ignored"
                )
        return values

    def _one(self, body: Any) -> Any:
        if body is None:
            return None
        values = self._decoded([body])
        return values[0] if values else None

    def _call(
        self, command: str, keys: list[str], *args: Any, client: Any = None, **kwargs: Any
    ) -> Any:
        """redis-py's `command` on made `keys` (all on one partition); raise Failed
        when the partition did not answer and errors do not raise."""
        if client is not None:  # django-redis' client= argument: the caller's own client
            return getattr(client, command)(*keys, *args, **kwargs)
        partition = self._partition(keys[0])
        outcome = partition.run("structure", command, keys, args, kwargs)
        if outcome.ok:
            return outcome.value
        if outcome.error is not None and not isinstance(outcome.error, UNREACHABLE):
            raise outcome.error  # an error reply (WRONGTYPE ...): a mistake in the call
        self._policy.failed(command, partition.name, outcome.error)
        raise Failed

    def _answer(self, compute: Callable[[], Any]) -> Any:
        try:
            return compute()
        except Failed:
            return None

    def _made(self, key: str, version: int | None) -> str:
        return self.make_and_validate_key(key, version=version)

    def _together(self, made: list[str]) -> bool:
        """Are these keys all on one partition (so one Redis command serves them)?"""
        return len({id(self._partition(key)) for key in made}) == 1

    # -- hashes --

    def hset(
        self,
        key: str,
        field: str | None = None,
        value: Any = None,
        mapping: Mapping[str, Any] | None = None,
        version: int | None = None,
        client: Any = None,
    ) -> int | None:
        """Set `field` (or every field of `mapping`) of the hash `key`; the number of new fields."""
        pairs = {} if field is None else {field: value}
        pairs.update(mapping or {})
        encoded = {f: self._member(v) for f, v in pairs.items()}
        made = self._made(key, version)
        return self._answer(lambda: int(self._call("hset", [made], mapping=encoded, client=client)))

    def hdel(self, key: str, field: str, version: int | None = None, client: Any = None) -> Any:
        """Remove `field` from the hash `key`; the number of fields removed."""
        made = self._made(key, version)
        return self._answer(lambda: int(self._call("hdel", [made], field, client=client)))

    def hlen(self, key: str, version: int | None = None, client: Any = None) -> int | None:
        made = self._made(key, version)
        return self._answer(lambda: int(self._call("hlen", [made], client=client)))

    def hkeys(self, key: str, version: int | None = None, client: Any = None) -> list[str] | None:
        """The fields of the hash `key` (as str)."""
        made = self._made(key, version)
        fields = self._answer(lambda: self._call("hkeys", [made], client=client))
        return (
            None if fields is None else [f.decode() if isinstance(f, bytes) else f for f in fields]
        )

    def hexists(self, key: str, field: str, version: int | None = None, client: Any = None) -> Any:
        made = self._made(key, version)
        return self._answer(lambda: bool(self._call("hexists", [made], field, client=client)))

    def hget(self, key: str, field: str, default: Any = None, version: int | None = None) -> Any:
        """The value of `field` in the hash `key`, or `default` (not in django-redis 7)."""
        made = self._made(key, version)
        body = self._answer(lambda: self._call("hget", [made], field))
        value = self._one(body)
        return default if value is None else value

    def hgetall(self, key: str, version: int | None = None) -> dict[str, Any] | None:
        """The whole hash `key` as a dict of str fields (not in django-redis 7)."""
        made = self._made(key, version)
        stored = self._answer(lambda: self._call("hgetall", [made]))
        if stored is None:
            return None
        found = {}
        for name, body in stored.items():
            values = self._decoded([body])
            if values:
                found[name.decode() if isinstance(name, bytes) else name] = values[0]
        return found

    # -- sets, one key --

    def sadd(self, key: str, *values: Any, version: int | None = None, client: Any = None) -> Any:
        """Add `values` to the set `key`; how many were not there yet."""
        made, members = self._made(key, version), self._members(values)
        return self._answer(lambda: int(self._call("sadd", [made], *members, client=client)))

    def srem(self, key: str, *members: Any, version: int | None = None, client: Any = None) -> Any:
        made, encoded = self._made(key, version), self._members(members)
        return self._answer(lambda: int(self._call("srem", [made], *encoded, client=client)))

    def scard(self, key: str, version: int | None = None, client: Any = None) -> int | None:
        made = self._made(key, version)
        return self._answer(lambda: int(self._call("scard", [made], client=client)))

    def smembers(self, key: str, version: int | None = None, client: Any = None) -> set | None:
        made = self._made(key, version)
        bodies = self._answer(lambda: self._call("smembers", [made], client=client))
        return None if bodies is None else set(self._decoded(bodies))

    def sismember(
        self, key: str, member: Any, version: int | None = None, client: Any = None
    ) -> Any:
        made, encoded = self._made(key, version), self._member(member)
        return self._answer(lambda: bool(self._call("sismember", [made], encoded, client=client)))

    def smismember(
        self, key: str, *members: Any, version: int | None = None, client: Any = None
    ) -> list[bool] | None:
        made, encoded = self._made(key, version), self._members(members)
        found = self._answer(lambda: self._call("smismember", [made], encoded, client=client))
        return None if found is None else [bool(v) for v in found]

    def spop(
        self, key: str, count: int | None = None, version: int | None = None, client: Any = None
    ) -> Any:
        """Remove and return a random member (`count` None) or a set of `count` of them."""
        made = self._made(key, version)
        popped = self._answer(lambda: self._call("spop", [made], count, client=client))
        if isinstance(popped, list):
            return set(self._decoded(popped))
        return self._one(popped)

    def srandmember(
        self, key: str, count: int | None = None, version: int | None = None, client: Any = None
    ) -> Any:
        """A random member (`count` None) or a list of `count` of them, left in the set."""
        made = self._made(key, version)
        chosen = self._answer(lambda: self._call("srandmember", [made], count, client=client))
        if isinstance(chosen, list):
            return self._decoded(chosen)
        return self._one(chosen)

    def sscan(
        self,
        key: str,
        match: str | None = None,
        count: int | None = SCAN_COUNT,
        version: int | None = None,
        client: Any = None,
    ) -> set | None:
        """One SSCAN from the start: members (a whole small set), those matching the
        glob `match` if given (matched here, on str members: stored members are signed)."""
        made = self._made(key, version)
        reply = self._answer(lambda: self._call("sscan", [made], 0, None, count, client=client))
        return None if reply is None else set(_matching(self._decoded(reply[1]), match))

    def sscan_iter(
        self,
        key: str,
        match: str | None = None,
        count: int | None = SCAN_COUNT,
        version: int | None = None,
        client: Any = None,
    ) -> Iterator[Any]:
        """Every member of the set `key` (matching `match`), SSCAN batch after batch."""
        made, cursor = self._made(key, version), 0
        for _ in range(1_000_000):  # a bound: SSCAN ends when the cursor comes back to 0
            reply = self._answer(
                lambda c=cursor: self._call(  # type: ignore[misc]
                    "sscan", [made], c, None, count, client=client
                )
            )
            if reply is None:
                return
            cursor, bodies = reply
            yield from _matching(self._decoded(bodies), match)
            if not int(cursor):
                return

    # -- sets, several keys --

    def _combined(self, how: str, made: list[str], client: Any) -> set[bytes]:
        if client is not None or self._together(made):
            return set(self._call(how, made, client=client))
        sets = [set(self._call("smembers", [key])) for key in made]
        if how == "sdiff":
            return sets[0].difference(*sets[1:])
        if how == "sinter":
            return sets[0].intersection(*sets[1:])
        return set().union(*sets)

    def _combined_into(self, how: str, dest: str, made: list[str], client: Any) -> int:
        # Overwriting the destination replaces whatever it held, an entry included:
        # delete it as entries are deleted first (this process's L1 copy, the others').
        # A destination that is also a source is a set (else Redis refuses): kept.
        if dest not in made:
            self._delete([dest])
        if client is not None or self._together([dest, *made]):
            return int(self._call(f"{how}store", [dest, *made], client=client))
        members = self._combined(how, made, None)
        return int(self._call("replace_set", [dest], list(members)))

    def _sets(self, how: str, keys: tuple, version: int | None, client: Any) -> set | None:
        made = [self._made(key, version) for key in keys]
        bodies = self._answer(lambda: self._combined(how, made, client))
        return None if bodies is None else set(self._decoded(bodies))

    def sdiff(self, *keys: str, version: int | None = None, client: Any = None) -> set | None:
        return self._sets("sdiff", keys, version, client)

    def sinter(self, *keys: str, version: int | None = None, client: Any = None) -> set | None:
        return self._sets("sinter", keys, version, client)

    def sunion(self, *keys: str, version: int | None = None, client: Any = None) -> set | None:
        return self._sets("sunion", keys, version, client)

    def sdiffstore(
        self,
        dest: str,
        *keys: str,
        version_dest: int | None = None,
        version_keys: int | None = None,
        client: Any = None,
    ) -> int | None:
        """Store in `dest` the members of the first set that no other set has; how many."""
        made_dest = self._made(dest, version_dest)
        made = [self._made(key, version_keys) for key in keys]
        return self._answer(lambda: self._combined_into("sdiff", made_dest, made, client))

    def sinterstore(
        self, dest: str, *keys: str, version: int | None = None, client: Any = None
    ) -> int | None:
        made_dest, made = self._made(dest, version), [self._made(k, version) for k in keys]
        return self._answer(lambda: self._combined_into("sinter", made_dest, made, client))

    def sunionstore(
        self, destination: str, *keys: str, version: int | None = None, client: Any = None
    ) -> int | None:
        made_dest = self._made(destination, version)
        made = [self._made(k, version) for k in keys]
        return self._answer(lambda: self._combined_into("sunion", made_dest, made, client))

    def smove(
        self,
        source: str,
        destination: str,
        member: Any,
        version: int | None = None,
        client: Any = None,
    ) -> bool | None:
        """Move `member` from the set `source` to `destination`; False if it was not in `source`."""
        src, dst = self._made(source, version), self._made(destination, version)
        encoded = self._member(member)

        def move() -> bool:
            if client is not None or self._together([src, dst]):
                return bool(self._call("smove", [src, dst], encoded, client=client))
            added = int(self._call("sadd", [dst], encoded))
            if int(self._call("srem", [src], encoded)):
                return True
            if added:  # it was not in the source after all: take back what we added
                self._call("srem", [dst], encoded)
            return False

        return self._answer(move)

    # -- sorted sets --

    def zadd(
        self,
        key: str,
        mapping: Mapping[Any, float],
        nx: bool = False,
        xx: bool = False,
        ch: bool = False,
        incr: bool = False,
        gt: bool = False,
        lt: bool = False,
        version: int | None = None,
        client: Any = None,
    ) -> int | float | None:
        """Add members with their scores; redis-py's ZADD options."""
        made = self._made(key, version)
        encoded = {self._member(m): score for m, score in mapping.items()}
        flags = {"nx": nx, "xx": xx, "ch": ch, "incr": incr, "gt": gt, "lt": lt}
        return self._answer(lambda: self._call("zadd", [made], encoded, client=client, **flags))

    def zcard(self, key: str, version: int | None = None, client: Any = None) -> int | None:
        made = self._made(key, version)
        return self._answer(lambda: int(self._call("zcard", [made], client=client)))

    def zcount(
        self, key: str, min: Any, max: Any, version: int | None = None, client: Any = None
    ) -> int | None:
        made = self._made(key, version)
        return self._answer(lambda: int(self._call("zcount", [made], min, max, client=client)))

    def zincrby(
        self, key: str, amount: float, value: Any, version: int | None = None, client: Any = None
    ) -> float | None:
        made, encoded = self._made(key, version), self._member(value)
        return self._answer(lambda: self._call("zincrby", [made], amount, encoded, client=client))

    def zscore(self, key: str, value: Any, version: int | None = None, client: Any = None) -> Any:
        made, encoded = self._made(key, version), self._member(value)
        return self._answer(lambda: self._call("zscore", [made], encoded, client=client))

    def zrank(
        self,
        key: str,
        value: Any,
        withscore: bool = False,
        version: int | None = None,
        client: Any = None,
    ) -> Any:
        made, encoded = self._made(key, version), self._member(value)
        flags = {"withscore": withscore} if withscore else {}
        return self._answer(lambda: self._call("zrank", [made], encoded, client=client, **flags))

    def zrem(self, key: str, *values: Any, version: int | None = None, client: Any = None) -> Any:
        made, encoded = self._made(key, version), self._members(values)
        return self._answer(lambda: int(self._call("zrem", [made], *encoded, client=client)))

    def zremrangebyscore(
        self, key: str, min: Any, max: Any, version: int | None = None, client: Any = None
    ) -> int | None:
        made = self._made(key, version)
        return self._answer(
            lambda: int(self._call("zremrangebyscore", [made], min, max, client=client))
        )

    def _scored(self, reply: Any, withscores: bool) -> Any:
        if reply is None:
            return None
        if not withscores:
            return self._decoded(reply)
        pairs = []
        for member, score in reply:
            values = self._decoded([member])
            if values:
                pairs.append((values[0], score))
        return pairs

    def zrange(
        self,
        key: str,
        start: int,
        end: int,
        desc: bool = False,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
        client: Any = None,
    ) -> list | None:
        flags = {"desc": desc, "withscores": withscores, "score_cast_func": score_cast_func}
        return self._ranged("zrange", key, (start, end), flags, version, client)

    def zrevrange(
        self,
        key: str,
        start: int,
        end: int,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
        client: Any = None,
    ) -> list | None:
        flags = {"withscores": withscores, "score_cast_func": score_cast_func}
        return self._ranged("zrevrange", key, (start, end), flags, version, client)

    def zrangebyscore(
        self,
        key: str,
        min: Any,
        max: Any,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
        client: Any = None,
    ) -> list | None:
        flags = _by_score_flags(start, num, withscores, score_cast_func)
        return self._ranged("zrangebyscore", key, (min, max), flags, version, client)

    def zrevrangebyscore(
        self,
        key: str,
        max: Any,
        min: Any,
        start: int | None = None,
        num: int | None = None,
        withscores: bool = False,
        score_cast_func: type = float,
        version: int | None = None,
        client: Any = None,
    ) -> list | None:
        flags = _by_score_flags(start, num, withscores, score_cast_func)
        return self._ranged("zrevrangebyscore", key, (max, min), flags, version, client)

    def _ranged(
        self, command: str, key: str, bounds: tuple, flags: dict, version: Any, client: Any
    ) -> list | None:
        made = self._made(key, version)
        reply = self._answer(lambda: self._call(command, [made], *bounds, client=client, **flags))
        return self._scored(reply, flags["withscores"])

    def _popped(self, command: str, key: str, count: int | None, version, client) -> Any:
        made = self._made(key, version)
        reply = self._answer(lambda: self._call(command, [made], count, client=client))
        if reply is None:
            return None
        pairs = self._scored(reply, True)
        if count is None:
            return pairs[0] if pairs else None
        return pairs

    def zpopmax(
        self, key: str, count: int | None = None, version: int | None = None, client: Any = None
    ) -> Any:
        """The member with the highest score and its score, removed (`count` of them: a list)."""
        return self._popped("zpopmax", key, count, version, client)

    def zpopmin(
        self, key: str, count: int | None = None, version: int | None = None, client: Any = None
    ) -> Any:
        """The member with the lowest score and its score, removed (`count` of them: a list)."""
        return self._popped("zpopmin", key, count, version, client)


def _by_score_flags(start: Any, num: Any, withscores: bool, score_cast_func: Any) -> dict:
    return {
        "start": start,
        "num": num,
        "withscores": withscores,
        "score_cast_func": score_cast_func,
    }


def _matching(values: list[Any], match: str | None) -> list[Any]:
    if match is None:
        return values
    return [v for v in values if isinstance(v, str) and fnmatch.fnmatchcase(v, match)]
