"""Reads without a Function: one MGET of the entries, and the tokens they need.

The ``read`` Function (stores/lua.py) checks a tagged entry's header against
the partition's generation and tag tokens on the server. That is one Redis
Function call per read: a few microseconds of Lua on the server for what a
GET does in a tenth of one, and on a shared or busy server those microseconds
are most of what a tagged get costs beyond django-redis' plain GET.

A process that knows which tags an entry was stored under can fetch the
entry and the lease in one MGET (atomic, like the Function), then the tokens
of those tags' slots with one HMGET per bucket of the slot table
(stores/slots.py), then the generation, all pipelined in one round trip, and
make the same check itself. The three are read one after the other, not at
once, and that is enough: while the generation stays what the entry recorded,
the meta hash was not started over (new_meta drops the generation, and a
generation is random, never made twice), so the token counter only went up
and no slot's token was drawn twice; a token read after the entry that still
equals the entry's record was the slot's token all along, and so at the
MGET. Read the generation first, and a meta hash started over in between
could draw a recorded token again for a slot invalidated before the MGET.
It learns an entry's tags when it writes the entry, or (as slots,
"#<slot>") from the header of what the Function returned. Knowing them
wrongly costs a round trip, never a wrong answer: an entry whose header
records a slot whose token was not fetched is read again through the
Function. A header that does not parse is invalid, as in the Function.

The one thing an MGET cannot tell is how long the partition's lease has left
(only that it is in force now), which decides when to renew it ahead of time.
So the plain read is used only while the lease, as the last Function read
reported it, has more than half its time left by this process's clock; after
that a Function read reports it again. A wrong clock here only moves when the
renewal happens: whether the lease is in force is the server's answer.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, NamedTuple

from .base import NO_TAGGED, UNVERIFIED
from .slots import BUCKET_FIELDS, GEN_KEY, slot_of

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


class Packed(NamedTuple):
    """Commands, and the same already in the wire's format (RESP)."""

    data: bytes
    commands: tuple[tuple, ...]


def plain_command(
    hints: ReadHints, ns: str, keys: list[str], leased: bool
) -> tuple[tuple, Packed | None, tuple[tuple[bytes, ...], ...]] | None:
    """The commands that read `keys` and what checking them needs: the MGET of
    the entries (with the lease when any is tagged), then one HMGET per bucket
    of their tags' slots and the GET of the generation, packed once per tag
    list; and per HMGET the slots it fetches. None when a key's tags are
    unknown or the lease must be heard of again (then the Function reads them)."""
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
        return ("MGET", *keys), None, ()
    if leased and monotonic() >= hints.plain_until:
        return None
    behind, slots = _plan(ns, tags)
    return (("MGET", *keys, ns + "lease") if leased else ("MGET", *keys)), behind, slots


_plans: dict[tuple[str, tuple[str, ...]], tuple[Packed, tuple[tuple[bytes, ...], ...]]] = {}


def _plan(ns: str, tags: tuple[str, ...]) -> tuple[Packed, tuple[tuple[bytes, ...], ...]]:
    """The HMGETs of the buckets holding `tags`' tokens and the GET of the
    generation, last (see the module docstring); and the slots (as a header
    records them) each HMGET fetches. The same few tag lists come back on every
    read: each is planned and packed once."""
    plan = _plans.get((ns, tags))
    if plan is None:
        if len(_plans) >= REMEMBERED_KEYS:
            _plans.clear()
        fields: dict[int, dict[int, None]] = {}
        for tag in tags:
            slot = slot_of(tag)
            fields.setdefault(slot // BUCKET_FIELDS, {})[slot % BUCKET_FIELDS] = None
        commands: list[tuple] = []
        slots = []
        for bucket, in_bucket in fields.items():
            commands.append(("HMGET", f"{ns}s:{bucket}", *in_bucket))
            slots.append(tuple(b"%d" % (bucket * BUCKET_FIELDS + f) for f in in_bucket))
        commands.append(("GET", ns + GEN_KEY))
        data = b"".join(_resp(*(str(a).encode() for a in command)) for command in commands)
        plan = _plans[(ns, tags)] = (Packed(data, tuple(commands)), tuple(slots))
    return plan


def _resp(*args: bytes) -> bytes:
    """One command as the wire carries it (packing it anew on every read costs
    more than the rest of the read's client side)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class Unchecked(Exception):
    """An entry's header records a slot whose token the read did not fetch."""


def checked_reply(
    lease_ms: int,
    keys: list[str],
    slots: tuple[tuple[bytes, ...], ...],
    leased: bool,
    replies: list,
) -> tuple[int, list]:
    """The (lease, bodies) the Function would have returned, from the replies to
    plain_command()'s commands; raises Unchecked when that cannot tell."""
    n = len(keys)
    reply = replies[0]
    values = reply[:n]
    if not slots:  # every key was known untagged
        if any(type(v) is bytes and v[:1] == b"T" for v in values):
            raise Unchecked
        return NO_TAGGED, values
    gen = replies[-1]  # read last: see the module docstring
    in_force = not leased or reply[n] is not None
    tokens: dict[bytes, Any] = {}
    for fetched, held in zip(slots, replies[1:-1], strict=True):
        tokens.update(zip(fetched, held, strict=True))
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
    """Does a tagged entry's header still hold: the generation and every slot's
    token unchanged? False too for a header that does not parse, as in the
    Function; Unchecked for a slot whose token was not fetched."""
    lines = header.split(b"\n")
    # "n" gen (slot token)*n, each followed by "\n": 2 + 2n fields and an empty last one.
    try:
        count = int(lines[0])
    except ValueError:
        return False
    if len(lines) != 3 + 2 * count or lines[1] != gen or gen is None:
        return False
    for i in range(2, 2 + 2 * count, 2):
        slot = lines[i]
        if slot not in tokens:
            raise Unchecked
        held = tokens[slot]
        if held is None or held != lines[i + 1]:
            return False
    return True
