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
   a *lease*, a key that expires by itself (the server's own clock).
2. A lease is granted in two steps. It is first written on the partition,
   not yet in force and already counting down; then the *other* partitions
   are asked whether the partition missed an invalidation (its *fence*
   count), each noting a *grant* that runs at least as long as the lease;
   then the lease is put in force. So a lease never outlives its grants,
   whatever the clocks say.
3. An invalidation that misses a partition records a fence on every other
   partition (atomically reading how long the latest grant still runs there)
   and waits that long before returning. Any lease granted before the fence
   is over by then; any lease granted after it saw the fence.
4. A fenced partition drops every tagged entry (a new generation) before its
   lease is put in force, and refuses fills for the write-lock horizon (locks
   it missed may still be held).
5. A peer that lost its memory (evicted, restarted, flushed) has a new epoch;
   the partitions it vouched for notice at their next lease and are fenced,
   unless the fences it held are known elsewhere (_fences_outlive).
   A peer that lost its memory less than a lease ago may have forgotten a
   grant: the invalidation then waits a whole lease from that moment.
6. The partition that lost its memory lost its write locks too; its peers
   hold each of them, and lend them at its next lease when that is provably
   complete (_borrow_locks), so it need not wait out the lock horizon.

A lease needs one other partition that answers: since a complete fence is on
every other partition that could be reached, and with three partitions or more
on two of them at least, any one of them knows, and one peer losing its memory
loses no fence. So with three partitions or more, a survivor keeps its tagged
entries while another partition is down, or after it restarted; with two, it
drops them until its peer answers again. If the fence cannot be recorded on
every other partition (or on fewer than two of three or more, or there is no
other partition), the invalidation is incomplete: InvalidationIncomplete is
raised, unless OPTIONS["INVALIDATION_FAILURE"] is "log".

A *witness* (OPTIONS["WITNESS"], e.g. the database: orm/witness.py) is a
durable place of last resort. Every fence is recorded there too, and a fence is
complete once the witness has it. Every renewal reads it; one that cannot hear
from every peer is vouched for by the witness, which notes the grant. So a
lone partition, or the survivor of two, keeps serving, and a fence is never
lost with the peer that held it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..exceptions import InvalidationIncomplete
from .bridge import pause
from .partition import Partition, fan_out
from .stores.base import DROP_AND_QUIET, DROP_TAGGED, NOT_FENCED

if TYPE_CHECKING:
    from .failures import ErrorPolicy

MAX_TAG_LENGTH = 200
# Counting the "family:*" tags entry_tags() adds. An entry's tags travel as
# arguments of one Redis Function call, which can unpack a few thousand values
# at most; a hundred keeps the entry header (and each read's check) small.
MAX_TAGS_PER_ENTRY = 100
# Allowance for servers' clocks that run at slightly different rates (a grant
# and a lease are measured on two servers), and for the sleep's own error.
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
        given = tuple(tags)
    except TypeError:
        raise TypeError(f"tags must be an iterable of str, got {tags!r}.") from None
    try:
        return _validated[given]  # the same few tag lists come back on every write
    except (KeyError, TypeError):  # TypeError: an unhashable item, refused below
        pass
    for tag in given:
        _validate_tag(tag)
    return _remember(_validated, given, tuple(sorted(set(given))))


def family_of(tag: str) -> str | None:
    """The "family:*" tag a "family:member" tag's entries are also stored under
    (entry_tags), or None for a tag of no family."""
    return f"{tag.split(':', 1)[0]}:*" if ":" in tag[1:] else None


def entry_tags(tags: Iterable[str] | None) -> tuple[str, ...]:
    """The tags an entry is stored under: the given ones plus their families.

    A tag "family:member" also puts the entry under "family:*", so that
    invalidate_tags("shop.product:*") reaches every "shop.product:<pk>" entry at
    the cost of one token, whatever the number of members.
    """
    tags = validate_tags(tags)
    try:
        return _with_families[tags]
    except KeyError:
        pass
    given = tags
    families = {family for family in map(family_of, tags) if family is not None}
    if families:
        tags = tuple(sorted(families.union(tags)))
    if len(tags) > MAX_TAGS_PER_ENTRY:
        raise ValueError(
            f"An entry can carry at most {MAX_TAGS_PER_ENTRY} tags, counting the "
            f"'family:*' tag that each 'family:member' tag adds; got {len(tags)}."
        )
    return _remember(_with_families, given, tags)


# Tag lists already validated (and with their families added): a write's tags
# are checked once per process, not character by character on every call.
_validated: dict[tuple, tuple[str, ...]] = {}
_with_families: dict[tuple[str, ...], tuple[str, ...]] = {}
REMEMBERED_TAG_LISTS = 4096
# Whitespace (as str.isspace() has it) or a control character.
_UNFIT = re.compile(r"[\s\x00-\x1f\x7f]").search


def _remember(memo: dict, given: tuple, tags: tuple[str, ...]) -> tuple[str, ...]:
    if len(memo) >= REMEMBERED_TAG_LISTS:
        memo.clear()  # tags made from ever new values: no use remembering them
    memo[given] = tags
    return tags


def _validate_tag(tag: object) -> None:
    if not isinstance(tag, str):
        raise TypeError(f"Each tag must be a str, got {tag!r} ({type(tag).__name__}).")
    if not tag or len(tag) > MAX_TAG_LENGTH:
        raise ValueError(f"A tag must have 1 to {MAX_TAG_LENGTH} characters, got {tag!r}.")
    if _UNFIT(tag):
        raise ValueError(f"A tag must not contain whitespace or control characters: {tag!r}.")


def fresh_token() -> str:
    return os.urandom(8).hex()


class Fencing:
    """Leases and fences across the partitions of one cache (see the module docstring)."""

    def __init__(
        self,
        partitions: list[Partition],
        lease_seconds: float,
        policy: ErrorPolicy,
        raise_incomplete: bool = True,
        witness: Any = None,
    ):
        self.partitions = partitions
        self.lease_ms = int(lease_seconds * 1000)
        self.policy = policy
        self.raise_incomplete = raise_incomplete
        self.witness = witness  # e.g. orm.witness.DatabaseWitness
        self.enabled = len(partitions) > 1 or witness is not None

    def needs_renewal(self, lease: int) -> bool:
        """Should a read that reported this lease (PTTL) renew it now?"""
        return self.enabled and -3 < lease < self.lease_ms // 2

    def renew(self, partition: Partition) -> bool:
        """Grant `partition` a lease, fencing it first if it missed an invalidation."""
        others = [p for p in self.partitions if p is not partition]
        nonce = fresh_token()
        prepared = partition.run("lease_prepare", nonce, self.lease_ms, [p.id for p in others])
        if not prepared.ok:
            return False
        epoch, lendable, vouched_epochs = prepared.value
        vouched = dict(zip((p.id for p in others), vouched_epochs, strict=True))
        checks = [
            o
            for o in fan_out([(p, "check_fence", (partition.id, self.lease_ms)) for p in others])
            if o.ok
        ]
        witnessed = None
        if self.witness is not None:
            # A fence that reached no peer is known to the witness alone; one that
            # some peer missed, to the witness and the others. With every peer
            # answering, a read will do; otherwise the witness vouches and notes
            # the grant, as a peer would.
            witnessed = self._ask_witness(partition, noting=len(checks) < len(others))
            if witnessed is None:
                return False
        elif not checks:
            return False  # nobody can vouch for it: its tagged entries stay untrusted
        fenced = [o for o in checks if o.value[0] > 0]
        # A peer whose epoch changed since it last vouched lost its memory: it
        # may have lost fences too. One that never vouched knew nothing to lose,
        # but what this partition holds was never checked against it.
        forgot = [o for o in checks if vouched[o.partition.id] not in (None, o.value[1])]
        unknown = any(vouched[o.partition.id] is None for o in checks)
        if forgot and (
            witnessed is not None or self._fences_outlive(forgot, checks, others, vouched)
        ):
            # With a witness, every complete fence is on it too, and it answered:
            # what the forgetful peer held for this partition is in `witnessed`.
            forgot = []
        # A peer that forgot may have held fences for this partition, so this
        # partition may have missed an invalidation *and the write locks taken
        # with it*: drop every tagged entry, and take nothing under tags until
        # any such lock has expired (the write-lock horizon). Nothing else knows
        # of those locks: the peer that lost them was the only one told. With a
        # witness, or when the others hold those fences too (_fences_outlive),
        # that is no longer so: a count of zero proves the forgotten fences held
        # nothing for this partition; it keeps its entries' safety without the
        # quiet period, and its tagged writes go on at once. (The peer that lost
        # its memory waits out its own lost locks, hello() made it quiet, unless
        # its peers lend them: _borrow_locks.)
        lost_fences = bool(forgot) and self.witness is None
        if fenced or witnessed or lost_fences:
            drop = DROP_AND_QUIET
        else:
            drop = DROP_TAGGED if unknown or forgot else NOT_FENCED
        epochs = {o.partition.id: o.value[1] for o in checks}
        lent = None
        if lendable and drop != DROP_AND_QUIET and len(checks) == len(others):
            lent = self._borrow_locks(partition, epoch, others)
        activated = partition.run("lease_activate", nonce, drop, epochs)
        if not activated.ok or not activated.value:
            return False
        if lent is not None and partition.run("adopt_locks", epoch, lent, CLOCK_MARGIN_MS).value:
            self.policy.note(
                "adopted",
                partition.name,
                "partition %s lost its memory and took its peers' write locks: "
                "it takes tagged writes again",
                partition.name,
            )
        if fenced or forgot or witnessed:
            self._note_fenced(partition, bool(fenced or witnessed), forgot)
            fan_out([(o.partition, "clear_fence", (partition.id, o.value[0])) for o in fenced])
            if witnessed:
                self._tell_witness("clear_fence", partition.id, witnessed)
        return True

    def _borrow_locks(
        self, partition: Partition, epoch: str, others: list[Partition]
    ) -> dict[str, list[tuple[int, str]]] | None:
        """The write locks `partition` lost with its memory, from its peers; None
        if they may not all be known there (it then waits out the lock horizon).

        A lock that reached this partition reached another one too, or it was
        fenced there: without a witness, with three partitions or more, fence()
        takes two partitions that hold the lock; with a witness, the witness holds
        the fences of the partitions the lock missed until they are made good,
        and a partition made good is quiet itself meanwhile. So if every peer
        answers, none is quiet, and the witness (if any) knows of no miss, the
        peers hold every lock still in force that this partition held. A lock on
        its way to a peer when the peer lends tells its writer (stores/lua.py:
        lock), who locks this partition again before it commits; a fence
        recorded here soon after ends the quiet period again (record_fence).
        """
        if self.witness is None and len(self.partitions) < 3:
            return None  # a fence of two partitions is on one of them only
        lent = fan_out([(p, "lend_locks", (partition.id, epoch)) for p in others])
        if not all(o.ok and not o.value[0] for o in lent):
            return None
        if self.witness is not None:
            if any(self._tell_witness("misses", p.id) != 0 for p in self.partitions):
                return None
        locks: dict[str, list[tuple[int, str]]] = {}
        for o in lent:
            for tag, held in o.value[1].items():
                locks.setdefault(tag, []).extend(held)
        return locks

    def _fences_outlive(
        self, forgot: list, checks: list, others: list[Partition], vouched: dict
    ) -> bool:
        """Are the fences a peer forgot still known to the others?

        Without a witness, a fence is complete only once it is on every other
        reachable partition, and on two of them at least when there are three
        partitions or more (see fence()). So when one peer alone lost its memory,
        and every other peer answered with the epoch it had when it last vouched
        (it kept its memory since), each fence the forgetful peer held is also on
        one of them, and counted in their answers. The partition then has nothing
        to drop and no lock it could have missed: no quiet period, no refusals.
        """
        if self.witness is not None or len(self.partitions) < 3 or len(forgot) > 1:
            return False
        if len(checks) < len(others):
            return False
        return all(vouched[o.partition.id] == o.value[1] for o in checks if o is not forgot[0])

    def _ask_witness(self, partition: Partition, noting: bool) -> int | None:
        """The misses the witness holds for `partition` (noting the lease if asked), or None."""
        if not noting:
            return self._tell_witness("misses", partition.id)
        answer = self._tell_witness("check_fence", partition.id, self.lease_ms)
        return None if answer is None else answer[0]

    def _tell_witness(self, operation: str, *args: Any) -> Any:
        try:
            return getattr(self.witness, operation)(*args)
        except Exception as exc:  # noqa: BLE001 - a witness that fails knows nothing
            self.policy.note("error:witness", "witness", "the witness failed: %r", exc)
            return None

    def _note_fenced(self, partition: Partition, fenced: bool, forgot: list) -> None:
        if fenced:
            why = "it missed a tag invalidation"
        else:
            names = ", ".join(o.partition.name for o in forgot)
            why = f"partition(s) {names}, which kept its fences, lost their memory"
        self.policy.note(
            "fenced",
            partition.name,
            "partition %s dropped its tagged entries: %s",
            partition.name,
            why,
        )

    def invalidate(
        self, tags: tuple[str, ...], operation: str = "drop_tags", *args: object
    ) -> None:
        """Run an invalidating operation on every partition; fence the ones it missed."""
        self.start(tags, operation, *args)()

    def start(
        self, tags: tuple[str, ...], operation: str, *args: object, fence: bool = True
    ) -> Any:
        """Send an invalidating operation to every partition without waiting for the
        replies; calling what it returns waits for them (and fences the misses).

        fence=False for an operation whose miss is harmless (releasing a lock:
        the lock keeps fills out until it expires by itself).
        """
        pending = [p.start(operation, tags, *args) for p in self.partitions]

        def finish() -> None:
            outcomes = [call.outcome() for call in pending]
            if operation == "lock":
                outcomes = self._lock_again(outcomes, tags, args)
            missed = [o for o in outcomes if not o.ok]
            for o in missed:
                self.policy.note(
                    f"error:{operation}",
                    o.partition.name,
                    "%s of tags on partition %s failed: %r",
                    operation,
                    o.partition.name,
                    o.error,
                )
            if missed and fence:
                self.fence([o.partition for o in missed], tags)

        return finish

    def _lock_again(self, outcomes: list, tags: tuple[str, ...], args: tuple) -> list:
        """Lock again each partition that, a peer says, copied the peers' locks in
        an epoch other than the one this lock landed in: it lost its memory (and
        this lock) after the lock landed, and copied before the lock reached the
        peer (see _borrow_locks)."""
        landed = {o.partition.id: o.value[0] for o in outcomes if o.ok}
        copied = {}
        for o in outcomes:
            if o.ok:
                copied.update(o.value[1])
        again = {i for i, epoch in copied.items() if i in landed and landed[i] != epoch}
        if not again:
            return outcomes
        return [
            o.partition.run("lock", tags, *args) if o.partition.id in again else o for o in outcomes
        ]

    def fence(self, missed: list[Partition], tags: tuple[str, ...] = ()) -> None:
        """Make sure partitions that missed an invalidation (or a clear) drop their
        tagged entries before they are trusted again."""
        reachable = [p for p in self.partitions if p not in missed]
        ids = [p.id for p in missed]
        records = fan_out([(p, "record_fence", (ids, self.lease_ms)) for p in reachable])
        left = [ms for o in records if o.ok for ms in o.value]
        if self.witness is not None:
            # Every fence goes to the witness: a renewal that cannot hear from
            # every peer relies on it alone.
            witnessed = self._tell_witness("record_fence", ids, self.lease_ms)
            complete = witnessed is not None
            left += witnessed or []
            if not any(o.ok for o in records):
                # Leases the peers vouched for, alone, left their grants there.
                left.append(self.lease_ms)
        else:
            # With three partitions or more, on two of them at least: so that one
            # of them losing its memory (a restart) loses no fence, and its peers
            # need not wait out the locks it might have known of (_fences_outlive).
            enough = 2 if len(self.partitions) >= 3 else 1
            complete = len(reachable) >= enough and all(o.ok for o in records)
        if not complete:
            self._incomplete(missed, tags)
            return
        wait_ms = max(left, default=0)
        if wait_ms > 0:
            # A lease granted before our fence was recorded may still be in force.
            pause((wait_ms + CLOCK_MARGIN_MS) / 1000)

    def _incomplete(self, missed: list[Partition], tags: tuple[str, ...]) -> None:
        names = ", ".join(p.name for p in missed)
        what = f"tags {_some(tags)}" if tags else "entries cleared by clear()"
        error = InvalidationIncomplete(
            f"{what} may still be served by partition(s) {names}: they missed the "
            f"invalidation and it could not be recorded on every other partition"
        )
        for p in missed:
            self.policy.note(
                "incomplete", p.name, "invalidation incomplete on partition %s: %s", p.name, error
            )
        error.tags = tags  # all of them; the message names the first few
        if self.raise_incomplete:
            raise error


# The most tags an error message lists: a bulk write can carry tens of thousands.
TAGS_NAMED = 10


def _some(tags: tuple[str, ...]) -> str:
    """The tags for a message: all of a few, or the first TAGS_NAMED and how many more."""
    if len(tags) <= TAGS_NAMED:
        return repr(list(tags))
    return f"{list(tags[:TAGS_NAMED])!r} and {len(tags) - TAGS_NAMED:,} more"
