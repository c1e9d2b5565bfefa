"""The storage tier under TierCache: reading and writing bodies on partitions.

Everything the backend stores or fetches goes through these methods: routing
a key to its partition, one call per partition (sent to all before any reply
is read), decoding and verifying what comes back, the fill guards, snapshots
of tag tokens, and renewing a partition's lease when a read asks for it. The
in-process L1 tier (storage/front.py), when a cache has one, sits in front of
``_read`` and hears of every change made through ``_store``, ``_delete`` and ``_run``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.exceptions import ResponseError

from . import front, hooks, timeouts
from .codec import Tampered
from .partition import Outcome, Partition, fan_out
from .stores.base import NO_LEASE, QUIET, Write
from .stores.redis import is_out_of_memory
from .tags import entry_tags, fresh_token

NOT_FOUND = object()


class PartitionedStorage:
    """Mixin of TierCache: the attributes it uses are set by TierCache.__init__."""

    _partitions: list[Partition]
    _partitioner: Any  # partitioning.Partitioner
    _codec: Any  # codec.Codec
    _policy: Any  # failures.ErrorPolicy
    _fencing: Any  # tags.Fencing
    _observer: Any  # observers.Observer: what features watch (statistics, hot keys ...)
    _l1: Any = None  # storage.l1.L1 when OPTIONS["L1"] is on
    _slot_of: dict[Partition, int]  # a partition's L1 slot
    default_timeout: Any

    def _partition(self, made_key: str) -> Partition:
        return self._partitions[self._partitioner.index(made_key)]

    def _group(self, made_keys: Iterable[str]) -> dict[Partition, list[str]]:
        if len(self._partitions) == 1:
            keys = list(made_keys)
            return {self._partitions[0]: keys} if keys else {}
        groups: dict[Partition, list[str]] = {}
        partitions, index = self._partitions, self._partitioner.index
        for key in made_keys:
            partition = partitions[index(key)]
            group = groups.get(partition)
            if group is None:
                groups[partition] = [key]
            else:
                group.append(key)
        return groups

    def _ttl_ms(self, timeout: Any) -> int | None:
        """None: forever; 0: not stored (Django: zero and negative timeouts expire at once).

        Raises TypeError/ValueError for a timeout no partition could honour."""
        return timeouts.ttl_ms(timeout, self.default_timeout)

    def _read(self, made_keys: list[str], operation: str = "get") -> dict[str, Any]:
        if self._l1 is not None:
            return front.read(self, made_keys, operation)
        if len(made_keys) == 1:
            return self._read_one(made_keys, operation)
        groups = self._group(made_keys)
        leased = self._fencing.enabled
        outcomes = fan_out([(p, "read", (keys, leased)) for p, keys in groups.items()])
        found: dict[str, Any] = {}
        for outcome, keys in zip(outcomes, groups.values(), strict=True):
            if not outcome.ok:
                self._policy.failed(operation, outcome.partition.name, outcome.error)
                continue
            lease, bodies = outcome.value
            if self._fencing.needs_renewal(lease) or _has_unverified(bodies):
                bodies = self._renew_and_reread(outcome.partition, keys, bodies)
            decode = self._codec.decode
            for key, body in zip(keys, bodies, strict=True):
                if type(body) is bytes:
                    try:
                        found[key] = decode(key, body)
                    except Exception:  # noqa: BLE001 - decoded again to be reported
                        self._decode_into(found, key, body, outcome.partition)
        self._observer.read(made_keys, len(found))
        return found

    def _read_one(self, made_keys: list[str], operation: str) -> dict[str, Any]:
        """_read for one key: one call, no grouping or fan-out (the hot path of get)."""
        key = made_keys[0]
        partition = self._partitions[self._partitioner.index(key)]
        outcome = partition.run("read", made_keys, self._fencing.enabled)
        found: dict[str, Any] = {}
        if outcome.error is None:
            lease, bodies = outcome.value
            if type(bodies[0]) is int or self._fencing.needs_renewal(lease):
                bodies = self._renew_and_reread(partition, made_keys, bodies)
            if type(bodies[0]) is bytes:
                self._decode_into(found, key, bodies[0], partition)
        else:
            self._policy.failed(operation, partition.name, outcome.error)
        self._observer.read(made_keys, len(found))
        return found

    def _renew_and_reread(self, partition: Partition, keys: list[str], bodies: list) -> list:
        renewed = self._fencing.renew(partition)
        unverified = [k for k, b in zip(keys, bodies, strict=True) if type(b) is int]
        if not unverified:
            return bodies
        if not renewed:
            return [None if type(b) is int else b for b in bodies]
        again = partition.run("read", unverified, True)
        reread = dict(zip(unverified, again.value[1], strict=True)) if again.ok else {}
        return [reread.get(k) if type(b) is int else b for k, b in zip(keys, bodies, strict=True)]

    def _decode_into(self, found: dict, key: str, body: bytes, partition: Partition) -> None:
        try:
            found[key] = self._codec.decode(key, body)
        except Tampered as exc:
            self._policy.note(
                "tampered",
                partition.name,
                "cache entry %r on partition %s was not written by this "
                "application (%s); treated as a miss",
                key,
                partition.name,
                exc,
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a pickled class that no longer exists
            self._policy.note(
                "undecodable",
                partition.name,
                "cache entry %r on partition %s cannot be decoded (%r); treated as a miss",
                key,
                partition.name,
                exc,
            )

    def _write(
        self,
        values: dict[str, Any],
        timeout: Any,
        tags: Iterable[str] | None,
        nx: bool = False,
        snapshot: tuple[str, ...] | None = None,
        operation: str = "set",
    ) -> set[str]:
        """Write every value under the same tags; return the keys stored."""
        tags = entry_tags(tags)
        return self._store(values, timeout, lambda key: (tags, snapshot), nx, operation)

    def _store(
        self, values: dict[str, Any], timeout: Any, meta: Any, nx: bool, operation: str
    ) -> set[str]:
        """Write values (all encoded before anything is sent), each with the
        (tags, snapshot) that meta(key) gives; return the keys stored."""
        bodies = {key: self._codec.encode(key, value) for key, value in values.items()}
        ttl = self._ttl_ms(timeout)
        if ttl == 0:
            if not nx:  # as in Django, setting with a zero timeout removes the key
                self._delete(list(bodies))
            return set()
        refused: dict[tuple[str, ...], bool] = {}
        writes = {}
        for key, body in bodies.items():
            tags, snapshot = meta(key)
            if tags and hooks.fill_guarded():
                if tags not in refused:
                    refused[tags] = hooks.refuses_fill(tags)
                if refused[tags]:
                    continue
            writes[key] = Write(key, body, ttl, tags, snapshot)
        groups = self._group(writes)
        fresh, leased = fresh_token(), self._fencing.enabled
        calls = [
            (p, "write", ([writes[k] for k in keys], nx, fresh, leased))
            for p, keys in groups.items()
        ]
        stored: set[str] = set()
        for outcome, keys in zip(fan_out(calls), groups.values(), strict=True):
            if outcome.ok and NO_LEASE in outcome.value:
                outcome = self._write_again(outcome, [writes[k] for k in keys], nx, fresh)
            if outcome.ok:
                stored.update(k for k, ok in zip(keys, outcome.value, strict=True) if ok == 1)
                self._note_refused(outcome)
                continue
            if is_out_of_memory(outcome.error):
                # A full server refuses the write but not a DEL: the old values
                # must not stay readable after a write that did not happen.
                outcome.partition.run("delete", keys)
            self._policy.failed(operation, outcome.partition.name, outcome.error)
        if self._l1 is not None:
            front.changed_keys(self, writes)
        self._observer.wrote(len(stored))
        return stored

    def _note_refused(self, outcome: Outcome) -> None:
        """Count the tagged entries a partition refused for safety's sake, as the
        event "refused": such a write is not stored, and the caller is told so
        (set() returns False, set_many() lists the key), but a whole partition
        refusing is a hit-rate event that the statistics page must show too."""
        if QUIET not in outcome.value and NO_LEASE not in outcome.value:
            return  # the usual case, on every write: nothing refused
        quiet = sum(1 for ok in outcome.value if ok == QUIET)
        unleased = sum(1 for ok in outcome.value if ok == NO_LEASE)
        name = outcome.partition.name
        if quiet:
            why = "it is quiet: it lost or may have missed write locks, and takes nothing "
            why += "under tags until any lock it could have held has expired"
            self._policy.note(
                "refused",
                name,
                "%d tagged write(s) refused on partition %s: %s",
                quiet,
                name,
                why,
                count=quiet,
            )
        if unleased:
            why = "no lease: no other partition (nor a witness) could vouch for it"
            self._policy.note(
                "refused",
                name,
                "%d tagged write(s) refused on partition %s: %s",
                unleased,
                name,
                why,
                count=unleased,
            )

    def _write_again(self, outcome: Outcome, writes: list[Write], nx: bool, fresh: str) -> Outcome:
        """A partition without a lease refused tagged entries: renew it, write those again."""
        refused = [w for w, ok in zip(writes, outcome.value, strict=True) if ok == NO_LEASE]
        if not self._fencing.renew(outcome.partition):
            return outcome
        again = outcome.partition.run("write", refused, nx, fresh, True)
        if not again.ok:
            return again
        answers = iter(again.value)
        value = [next(answers) if ok == NO_LEASE else ok for ok in outcome.value]
        return Outcome(outcome.partition, outcome.operation, value)

    def _run_leased(self, partition: Partition, operation: str, *args: Any) -> Outcome:
        """Run an operation that answers None when the partition holds no lease:
        then renew the lease and run it once more."""
        leased = self._fencing.enabled
        outcome = partition.run(operation, *args, leased)
        if outcome.ok and outcome.value is None and leased and self._fencing.renew(partition):
            outcome = partition.run(operation, *args, leased)
        return outcome

    def _delete(self, made_keys: list[str]) -> int:
        groups = self._group(made_keys)
        deleted = 0
        for outcome in fan_out([(p, "delete", (keys,)) for p, keys in groups.items()]):
            if outcome.ok:
                deleted += outcome.value
            else:
                self._policy.failed("delete", outcome.partition.name, outcome.error)
        if self._l1 is not None:
            front.changed_keys(self, made_keys)
        self._observer.deleted(len(made_keys))
        return deleted

    def _run(self, made_key: str, operation: str, *args: Any) -> Outcome:
        outcome = self._partition(made_key).run(operation, made_key, *args)
        if self._l1 is not None and operation in ("touch", "incr"):
            front.changed_keys(self, [made_key])
        if not outcome.ok and not is_type_error(outcome.error):
            self._policy.failed(operation, outcome.partition.name, outcome.error)
        return outcome

    def _snapshot(self, made_key: str, tags: tuple[str, ...], timeout: Any) -> Any:
        ttl = self._ttl_ms(timeout)
        if not tags or ttl == 0:
            return None
        outcome = self._run_leased(self._partition(made_key), "snapshot", tags, ttl, fresh_token())
        if not outcome.ok:
            self._policy.failed("get_or_set", outcome.partition.name, outcome.error)
            return NOT_FOUND
        return NOT_FOUND if outcome.value is None else outcome.value

    def _snapshots(self, tags: dict[str, tuple[str, ...]], timeout: Any) -> dict[str, Any]:
        """Per key, the (gen, token*) of its tags on its partition: one call per partition."""
        ttl = self._ttl_ms(timeout)
        groups = self._group(tags)
        unions = {p: sorted({t for k in keys for t in tags[k]}) for p, keys in groups.items()}
        leased = self._fencing.enabled
        calls = [(p, "snapshot", (tuple(unions[p]), ttl, fresh_token(), leased)) for p in groups]
        snapshots: dict[str, Any] = {}
        for outcome, keys in zip(fan_out(calls), groups.values(), strict=True):
            if outcome.ok and outcome.value is None:
                partition = outcome.partition
                outcome = self._run_leased(
                    partition, "snapshot", tuple(unions[partition]), ttl, fresh_token()
                )
            if not outcome.ok:
                self._policy.failed("get_or_set", outcome.partition.name, outcome.error)
                continue
            if outcome.value is None:
                continue  # still no lease: these keys are loaded but not stored
            gen, *tokens = outcome.value
            token_of = dict(zip(unions[outcome.partition], tokens, strict=True))
            for key in keys:
                snapshots[key] = (gen, *(token_of[t] for t in tags[key])) if tags[key] else None
        return snapshots


def _has_unverified(bodies: list) -> bool:
    """Did READ mark a tagged entry UNVERIFIED (an int among bytes and None)?"""
    return any(type(b) is int for b in bodies)


def is_type_error(error: BaseException | None) -> bool:
    """Did Redis refuse to add (not a 64-bit integer, or an overflow)?"""
    return isinstance(error, TypeError) or (
        isinstance(error, ResponseError)
        and ("not an integer" in str(error) or "overflow" in str(error))
    )
