"""Tags: validation, invalidation, and the fences that make invalidation stick.

Each partition keeps its own token per tag; an entry records the tokens it was
written under, and stays valid while they are unchanged (see stores/lua.py).
Invalidating a tag deletes its token on every partition: the cost is one
command per partition, whatever the number of entries the tag covers.

The hard case is a partition that cannot be reached while a tag is
invalidated (stopped, partitioned away, too slow) and later comes back with
its old tokens. With more than one partition this is handled so that, once
invalidate_tags() returns, no process is served an entry it covered:

1. Tagged entries on a partition are trusted only while the partition holds
   a *lease*, a key that expires by itself at an absolute time.
2. A lease is granted (or extended) only after asking the *other* partitions
   whether the partition missed an invalidation (its *fence* count), and
   each of them notes the deadline being granted (its *grant*) in the same
   atomic step.
3. An invalidation that misses a partition records a fence on every other
   partition (also atomically reading the latest grant there) and then waits
   until that grant has expired before returning. Any lease granted before the
   fence was recorded is over by then; any lease granted after it saw the
   fence.
4. Granting a lease to a fenced partition first replaces its generation
   token, which invalidates every tagged entry it holds, and then clears the
   fence (unless more misses were recorded meanwhile).

Reads stay at one round trip: the lease check runs inside the read script.
Leases are renewed when half used up (one extra call per partition every
TAG_LEASE/2 seconds per process), and a partition that missed an invalidation
drops all its tagged entries, the price of having been unreachable. If the
fence cannot be recorded on every other partition, the invalidation is
reported as incomplete (InvalidationIncomplete). With a single partition there
is nobody to tell, and a missed invalidation is reported the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .exceptions import InvalidationIncomplete
from .partition import Outcome, Partition, fan_out

if TYPE_CHECKING:
    from .failures import ErrorPolicy

MAX_TAG_LENGTH = 200
# Counting the "family:*" tags entry_tags() adds. An entry's tags travel as
# arguments of one Redis Function call, which can unpack a few thousand values
# at most; a hundred keeps the entry header (and each read's check) small.
MAX_TAGS_PER_ENTRY = 100
# Allowance for clocks that disagree between the hosts granting and honouring leases.
CLOCK_MARGIN_MS = 50


def validate_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """The tags as a sorted tuple without repeats; TypeError/ValueError on bad input."""
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)):
        raise TypeError(
            f"tags must be an iterable of str, not a single {type(tags).__name__} "
            f"({tags!r}); write tags=[{tags!r}]."
        )
    try:
        tags = list(tags)
    except TypeError:
        raise TypeError(f"tags must be an iterable of str, got {tags!r}.") from None
    for tag in tags:
        _validate_tag(tag)
    return tuple(sorted(set(tags)))


def entry_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """The tags an entry is stored under: the given ones plus their families.

    A tag "family:member" also puts the entry under "family:*", so that
    invalidate_tags("shop.product:*") reaches every "shop.product:<pk>" entry at
    the cost of one token, whatever the number of members.
    """
    tags = validate_tags(tags)
    families = {f"{tag.split(':', 1)[0]}:*" for tag in tags if ":" in tag[1:]}
    if families:
        tags = tuple(sorted(families.union(tags)))
    if len(tags) > MAX_TAGS_PER_ENTRY:
        raise ValueError(
            f"An entry can carry at most {MAX_TAGS_PER_ENTRY} tags, counting the "
            f"'family:*' tag that each 'family:member' tag adds; got {len(tags)}."
        )
    return tags


def _validate_tag(tag: object) -> None:
    if not isinstance(tag, str):
        raise TypeError(f"Each tag must be a str, got {tag!r} ({type(tag).__name__}).")
    if not tag or len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"A tag must have 1 to {MAX_TAG_LENGTH} characters, got {tag!r}.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in tag):
        raise ValueError(f"A tag must not contain whitespace or control characters: {tag!r}.")


def now_ms() -> int:
    return int(time.time() * 1000)


class Fencing:
    """Leases and fences across the partitions of one cache (see the module docstring)."""

    def __init__(self, partitions: list[Partition], lease_seconds: float, policy: ErrorPolicy):
        self.partitions = partitions
        self.lease_ms = int(lease_seconds * 1000)
        self.policy = policy
        self.enabled = len(partitions) > 1

    def needs_renewal(self, lease: int) -> bool:
        """Should a read that reported this lease (PTTL) renew it now?"""
        return self.enabled and -3 < lease < self.lease_ms // 2

    def renew(self, partition: Partition) -> bool:
        """Grant `partition` a lease, fencing it first if it missed an invalidation."""
        deadline = now_ms() + self.lease_ms
        others = [p for p in self.partitions if p is not partition]
        checks = [
            o
            for o in fan_out([(p, "check_fence", (partition.id, deadline)) for p in others])
            if o.ok
        ]
        if not checks:
            return False  # nobody can vouch for it: its tagged entries stay untrusted
        fenced = [o for o in checks if o.value > 0]
        if not partition.run("lease", deadline, bool(fenced)).ok:
            return False
        if fenced:
            self.policy.note(
                "fenced",
                partition.name,
                "partition %s missed a tag invalidation; its tagged entries were dropped",
                partition.name,
            )
            fan_out([(o.partition, "clear_fence", (partition.id, o.value)) for o in fenced])
        return True

    def invalidate(
        self, tags: tuple[str, ...], operation: str = "drop_tags", *args: object
    ) -> None:
        """Run an invalidating operation on every partition; fence the ones it missed."""
        self.start(tags, operation, *args)()

    def start(self, tags: tuple[str, ...], operation: str, *args: object) -> Any:
        """Send an invalidating operation to every partition without waiting for the
        replies; calling what it returns waits for them (and fences the misses)."""
        pending = [p.start(operation, tags, *args) for p in self.partitions]

        def finish() -> None:
            missed = [o for o in (call.outcome() for call in pending) if not o.ok]
            for o in missed:
                self.policy.note(
                    "error:invalidate",
                    o.partition.name,
                    "invalidating tags on partition %s failed: %r",
                    o.partition.name,
                    o.error,
                )
            if missed:
                self.fence([o.partition for o in missed], tags)

        return finish

    def fence(self, missed: list[Partition], tags: tuple[str, ...] = ()) -> None:
        """Make sure partitions that missed an invalidation (or a clear) drop their
        tagged entries before they are trusted again."""
        reachable = [p for p in self.partitions if p not in missed]
        ids = [p.id for p in missed]
        records = fan_out([(p, "record_fence", (ids,)) for p in reachable])
        if not self.enabled or not reachable or not all(o.ok for o in records):
            self._incomplete(missed, tags, records)
            return
        grants = [g for o in records for g in o.value if g is not None]
        wait_ms = max(grants, default=0) + CLOCK_MARGIN_MS - now_ms()
        if grants and wait_ms > 0:
            # A lease granted before our fence was recorded may still be in force.
            time.sleep(wait_ms / 1000)

    def _incomplete(
        self, missed: list[Partition], tags: tuple[str, ...], records: list[Outcome]
    ) -> None:
        names = ", ".join(p.name for p in missed)
        what = f"tags {list(tags)!r}" if tags else "entries cleared by clear()"
        error = InvalidationIncomplete(
            f"{what} may still be served by partition(s) {names}: they missed the "
            f"invalidation and it could not be recorded on every other partition"
        )
        for p in missed:
            self.policy.failed("invalidate_tags", p.name, error)
