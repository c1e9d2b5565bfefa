"""What a partition's store offers, whatever keeps the data.

Every operation starts a ``Call`` and returns at once; ``Call.result()`` waits
for the answer. Starting one call on every partition before waiting on any
lets a multi-key operation cost one round trip of latency however many
partitions it touches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

UNVERIFIED = 0  # a tagged entry found while the partition's lease was gone
NO_TAGGED = -3  # READ's lease field when no tagged entry was read


class Call(Protocol):
    def result(self) -> Any: ...


class Done:
    """A call that finished when it started (in-process stores, early failures)."""

    __slots__ = ("_value", "_error")

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self._value, self._error = value, error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True)
class Write:
    """One entry to write. ttl_ms None means forever (always > 0 otherwise)."""

    key: str
    body: bytes
    ttl_ms: int | None
    tags: tuple[str, ...] = ()
    snapshot: tuple[str, ...] | None = None  # (gen, token*) read before computing


class Store:
    """Base class of partition stores; see stores/lua.py for the semantics."""

    def __init__(self, url: str, ns: str, options: dict[str, Any]):
        self.url, self.ns = url, ns

    def read(self, keys: list[str], leased: bool) -> Call:
        """-> (lease, [body | None | UNVERIFIED])."""
        raise NotImplementedError

    def write(self, writes: list[Write], nx: bool, fresh: str) -> Call:
        """-> [stored?]"""
        raise NotImplementedError

    def delete(self, keys: list[str]) -> Call:
        """-> number deleted"""
        raise NotImplementedError

    def touch(self, key: str, ttl_ms: int | None) -> Call:
        raise NotImplementedError

    def incr(self, key: str, delta: int) -> Call:
        """-> new value, or None when the key is missing"""
        raise NotImplementedError

    def entry(self, key: str) -> Call:
        """-> (body, pttl_ms or -1, tags) or None"""
        raise NotImplementedError

    def snapshot(self, tags: tuple[str, ...], ttl_ms: int | None, fresh: str) -> Call:
        """-> (gen, token*) for the tags, creating the missing ones"""
        raise NotImplementedError

    def drop_tags(self, tags: tuple[str, ...]) -> Call:
        raise NotImplementedError

    def lock(self, tags: tuple[str, ...], writer: str, until_ms: int) -> Call:
        """Invalidate the tags and refuse fills under them until unlock or until_ms."""
        raise NotImplementedError

    def unlock(self, tags: tuple[str, ...], writer: str) -> Call:
        """Release the writer's locks and invalidate the tags again."""
        raise NotImplementedError

    def record_fence(self, ids: list[str]) -> Call:
        """-> [latest lease deadline in ms granted to each id, or None]"""
        raise NotImplementedError

    def check_fence(self, id_: str, deadline_ms: int) -> Call:
        """-> misses recorded for id_"""
        raise NotImplementedError

    def lease(self, deadline_ms: int, fenced: bool) -> Call:
        raise NotImplementedError

    def clear_fence(self, id_: str, count: int) -> Call:
        raise NotImplementedError

    def clear(self) -> Call:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (Django calls close() after each request)."""
