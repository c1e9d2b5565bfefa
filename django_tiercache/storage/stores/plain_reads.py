"""Reads without a Function: one MGET of the entries and the tokens they need.

The ``read`` Function (stores/lua.py) checks a tagged entry's header against
the partition's generation and tag tokens on the server. That is one Redis
Function call per read: a few microseconds of Lua on the server for what a
GET does in a tenth of one, and on a shared or busy server those microseconds
are most of what a tagged get costs beyond django-redis' plain GET.

A process that knows which tags an entry was stored under can fetch the
entry, the generation, the lease and those tags' tokens in one MGET (atomic,
like the Function) and make the same check itself. It learns an entry's tags
when it writes the entry, or from the header of what the Function returned.
Knowing them wrongly costs a round trip, never a wrong answer: an entry whose
header names a tag the MGET did not fetch is read again through the Function.
A header that does not parse is invalid, as in the Function.

The one thing an MGET cannot tell is how long the partition's lease has left
(only that it is in force now), which decides when to renew it ahead of time.
So the plain read is used only while the lease, as the last Function read
reported it, has more than half its time left by this process's clock; after
that a Function read reports it again. A wrong clock here only moves when the
renewal happens: whether the lease is in force is the server's answer.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from .base import NO_TAGGED, UNVERIFIED

# Keys whose tags one process remembers per namespace and server; past that the
# memory starts over (what is read often is learned again at its next read).
REMEMBERED_KEYS = 20_000


class ReadHints:
    """What one process knows of a namespace's entries on one server."""

    __slots__ = ("tags", "plain_until", "lease_ms")

    def __init__(self, lease_ms: int):
        self.tags: dict[str, tuple[str, ...]] = {}  # key -> the tags it was stored under
        self.plain_until = 0.0  # monotonic(): until then the lease has more than half left
        self.lease_ms = lease_ms

    def learn(self, key: str, tags: tuple[str, ...]) -> None:
        known = self.tags
        if len(known) >= REMEMBERED_KEYS and key not in known:
            known.clear()
        known[key] = tags

    def heard_lease(self, sent_at: float, pttl: int) -> None:
        """A Function read sent at `sent_at` found the lease with `pttl` ms left."""
        if pttl != NO_TAGGED:
            self.plain_until = sent_at + (pttl - self.lease_ms / 2) / 1000


_hints: dict[tuple[str, str], ReadHints] = {}


def hints_for(url: str, ns: str, lease_ms: int) -> ReadHints:
    """The process-wide hints of a namespace on a server (every thread's store shares them)."""
    hints = _hints.get((url, ns))
    if hints is None or hints.lease_ms != lease_ms:
        hints = _hints[(url, ns)] = ReadHints(lease_ms)
    return hints


def plain_command(
    hints: ReadHints, ns: str, keys: list[str], leased: bool
) -> tuple[tuple, tuple[bytes, ...]] | None:
    """The MGET that reads `keys` and what checking them needs, with the tags whose
    tokens it fetches; None when a key's tags are unknown or the lease must be
    heard of again (then the Function reads them)."""
    known = hints.tags
    if len(keys) == 1:
        tags = known.get(keys[0])
        if tags is None:
            return None
    else:
        merged: set[str] = set()
        for key in keys:
            key_tags = known.get(key)
            if key_tags is None:
                return None
            merged.update(key_tags)
        tags = tuple(merged)
    if not tags:
        return ("MGET", *keys), ()
    if leased and monotonic() >= hints.plain_until:
        return None
    token_keys, names = _plan(ns, tags)
    if leased:
        return ("MGET", *keys, ns + "gen", ns + "lease", *token_keys), names
    return ("MGET", *keys, ns + "gen", *token_keys), names


_plans: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, ...], tuple[bytes, ...]]] = {}


def _plan(ns: str, tags: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """The token keys of `tags` and the names a header gives them (the same few
    tag lists come back on every read)."""
    plan = _plans.get((ns, tags))
    if plan is None:
        if len(_plans) >= REMEMBERED_KEYS:
            _plans.clear()
        plan = _plans[(ns, tags)] = (
            tuple(ns + "t:" + t for t in tags),
            tuple(t.encode() for t in tags),
        )
    return plan


class Unchecked(Exception):
    """An entry's header names a tag whose token the MGET did not fetch."""


def checked_reply(
    lease_ms: int, keys: list[str], names: tuple[bytes, ...], leased: bool, reply: list
) -> tuple[int, list]:
    """The (lease, bodies) the Function would have returned, from the reply to
    plain_command()'s MGET; raises Unchecked when that cannot tell."""
    n = len(keys)
    values = reply[:n]
    if not names:  # every key was known untagged
        if any(type(v) is bytes and v[:1] == b"T" for v in values):
            raise Unchecked
        return NO_TAGGED, values
    gen = reply[n]
    in_force = not leased or reply[n + 1] is not None
    tokens = dict(zip(names, reply[n + 2 if leased else n + 1 :], strict=True))
    verdicts: dict[bytes, bool] = {}  # entries written under the same tokens share a header
    bodies: list = []
    tagged = False
    for value in values:
        if type(value) is not bytes or value[:1] != b"T":
            bodies.append(value)
            continue
        tagged = True
        if not in_force:
            bodies.append(UNVERIFIED)
            continue
        split = split_header(value)
        if split is None:
            bodies.append(None)
            continue
        header, end = split
        verdict = verdicts.get(header)
        if verdict is None:
            verdict = verdicts[header] = _holds(header, gen, tokens)
        bodies.append(value[end:] if verdict else None)
    if not tagged:
        return NO_TAGGED, bodies
    # In force with more than half left (plain_command made sure), or gone.
    return (lease_ms if in_force else 0), bodies


def split_header(value: bytes) -> tuple[bytes, int] | None:
    """A tagged value's header ("T" <length> ":" <header> <body>) and where its
    body starts, or None when it does not parse."""
    try:
        colon = value.index(b":", 1)
        end = colon + 1 + int(value[1:colon])
    except ValueError:
        return None
    if end > len(value):
        return None
    return value[colon + 1 : end], end


def _holds(header: bytes, gen: bytes | None, tokens: dict[bytes, Any]) -> bool:
    """Does a tagged entry's header still hold: the generation and every tag's
    token unchanged? False too for a header that does not parse, as in the
    Function; Unchecked for a tag whose token was not fetched."""
    lines = header.split(b"\n")
    # "n" gen (tag token)*n, each followed by "\n": 2 + 2n fields and an empty last one.
    try:
        count = int(lines[0])
    except ValueError:
        return False
    if len(lines) != 3 + 2 * count or lines[1] != gen:
        return False
    for i in range(2, 2 + 2 * count, 2):
        tag = lines[i]
        if tag not in tokens:
            raise Unchecked
        if tokens[tag] != lines[i + 1]:
            return False
    return True
