"""The fixed table of tag-token slots a partition keeps (see stores/lua.py).

A tag's token lives in one of SLOTS slots, chosen by a stable hash of the tag's
name; the slots are stored as BUCKETS small hashes ``<ns> s:<bucket>`` of
BUCKET_FIELDS integer fields each, which Redis keeps listpack-encoded (a few
bytes a field, instead of a key of ~100 bytes per tag). The table is fixed in
size: however many distinct tags are ever used or invalidated, tag state never
takes more than BUCKETS small hashes.

Two tags may share a slot, and so a token: invalidating one then costs the
other's entries their hits, never a stale read. Changing SLOTS changes which
slot a tag has, so it must come with a new layout (LAYOUT), never alone.

A tag written "#<n>" (0 <= n < SLOTS) names slot n itself: what ``entry``
returns for a tagged entry, whose header keeps slots, not tag names.
"""

from __future__ import annotations

import hashlib

SLOT_BITS = 20
SLOTS = 1 << SLOT_BITS
BUCKET_FIELDS = 128  # Redis' hash-max-listpack-entries default: the hashes stay small
BUCKETS = SLOTS // BUCKET_FIELDS
# Part of the generation's key: entries written under another layout (tag names
# and tokens of their own in the header) find no generation of theirs, and miss.
LAYOUT = "2"
GEN_KEY = "gen" + LAYOUT  # lua.py GEN

_slots: dict[str, int] = {}
REMEMBERED_SLOTS = 65536


def slot_of(tag: str) -> int:
    """The slot of a tag: the first SLOT_BITS bits of its SHA-1 (as the Functions
    compute it, with redis.sha1hex), or n for a tag "#<n>"."""
    slot = _slots.get(tag)
    if slot is not None:
        return slot
    slot = _named_slot(tag)
    if slot is None:
        slot = int(hashlib.sha1(tag.encode()).hexdigest()[: SLOT_BITS // 4], 16)  # noqa: S324
    if len(_slots) >= REMEMBERED_SLOTS:
        _slots.clear()
    _slots[tag] = slot
    return slot


def _named_slot(tag: str) -> int | None:
    if tag[:1] != "#" or not tag[1:].isdigit() or not tag[1:].isascii():
        return None
    n = int(tag[1:])
    return n if n < SLOTS else None


def slot_name(tag: str) -> str:
    """The "#<n>" name of a tag's slot: what change messages and L1 copies carry."""
    return f"#{slot_of(tag)}"


def slot_names(tags: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(slot_name(tag) for tag in tags)


def bucket_key(ns: str, tag: str) -> str:
    """The hash that holds a tag's token."""
    return f"{ns}s:{slot_of(tag) // BUCKET_FIELDS}"


def bucket_field(tag: str) -> str:
    return str(slot_of(tag) % BUCKET_FIELDS)


def known_names(name: str) -> list[str]:
    """The tags this process has seen whose slot a "#<n>" name is (what the key
    browser shows for an entry, whose header keeps slots), or the name itself
    when it knows none. Several tags may share the slot: each is listed."""
    slot = _named_slot(name)
    if slot is None:
        return [name]
    names = [tag for tag, known in list(_slots.items()) if known == slot and tag != name]
    return sorted(names) or [name]
