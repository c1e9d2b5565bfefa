"""Running jobs: batches pulled lazily in one thread, written from `concurrency` threads."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.db import connections, models

from ..hotkeys.record import not_sampled, record_of
from ..orm.cache_aside import model_timeout, object_entry
from ..orm.registry import registration_for
from .jobs import Job, Request
from .planning import plan

ERRORS_KEPT = 20  # per warmer: the summary shows a sample, not every failed item
NOT_STORED = (
    "not stored: its tags were invalidated or locked (a transaction was writing the row) "
    "while it loaded, or its partition failed"
)

# Why an item a cache did not take failed: its partition failed, or refused a
# tagged entry for safety (it may have missed write locks; the statistics count
# those as "refused").
NOT_TAKEN = "not stored: its partition failed, or refused a tagged entry for now"


@dataclass
class Result:
    """What happened to one job: a row of the summary."""

    label: str
    alias: str = ""
    items: int = 0
    warmed: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    error: str | None = None  # what stopped the warmer, if anything did
    errors: list[str] = field(default_factory=list)  # a sample of failed items

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    def add(self, tally: Tally) -> None:
        self.warmed += tally.warmed
        self.skipped += tally.skipped
        self.failed += tally.failed
        self.errors.extend(tally.errors[: ERRORS_KEPT - len(self.errors)])

    def as_dict(self) -> dict[str, Any]:
        fields = ("label", "alias", "items", "warmed", "skipped", "failed", "error", "errors")
        timing = {"seconds": round(self.seconds, 3), "items_per_second": round(self.rate, 1)}
        return {**{f: getattr(self, f) for f in fields}, **timing}


@dataclass
class Tally:
    """What happened to one batch."""

    warmed: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, key: Any, error: BaseException | str, count: int = 1) -> None:
        self.failed += count
        if len(self.errors) < ERRORS_KEPT:
            self.errors.append(f"{key!r}: {error if isinstance(error, str) else repr(error)}")


Progress = Callable[[Result, bool], None]  # (result so far, finished?)


class Runner:
    """Runs jobs: pulls batches in this thread, writes them from `concurrency` threads."""

    def __init__(self, request: Request, progress: Progress | None = None):
        self.request = request
        self.progress = progress or (lambda result, finished: None)

    def run(self, job: Job) -> Result:
        result = Result(job.label, job.alias or "", items=job.unplaced, skipped=job.unplaced)
        started = time.perf_counter()
        try:
            batches, write = self._plan_writes(job, job.load(), result)
            self._pump(batches, write, result)
        except Exception as exc:  # noqa: BLE001 - a warmer that raises stops itself, not the run
            result.error = f"{type(exc).__name__}: {exc}"
        result.seconds = time.perf_counter() - started
        self.progress(result, True)
        return result

    def _plan_writes(
        self, job: Job, loaded: Any, result: Result
    ) -> tuple[Iterator[list], Callable]:
        size = self.request.batch_size
        if isinstance(loaded, models.QuerySet):
            registration = registration_for(loaded.model)
            result.alias = job.alias or registration.cache_alias
            target = _Target(self.request, job, result.alias, _model_timeout(job, registration))
            pks = loaded.values_list("pk", flat=True).iterator(chunk_size=size)
            return _batches(pks, size), lambda pks: target.write_objects(loaded, pks)
        result.alias = job.alias or "default"
        target = _Target(self.request, job, result.alias, job.timeout)
        items = loaded if job.keys is None else _only(loaded, job.keys)
        return _batches(items, size), target.write_items

    def _pump(
        self, batches: Iterator[list], write: Callable[[list], Tally], result: Result
    ) -> None:
        if self.request.concurrency == 1:  # in this thread: no second database connection
            for batch in batches:
                result.items += len(batch)
                result.add(_guarded(write, batch))
                self.progress(result, False)
            return
        todo: queue.Queue = queue.Queue(maxsize=self.request.concurrency)
        done: queue.Queue = queue.Queue()
        workers = [
            threading.Thread(target=_work, args=(todo, done, write), daemon=True)
            for _ in range(self.request.concurrency)
        ]
        for worker in workers:
            worker.start()
        try:
            for batch in batches:
                result.items += len(batch)
                while not _put(todo, batch):
                    self._collect(done, result)
                self._collect(done, result)
        finally:
            for _ in workers:
                todo.put(None)
            for worker in workers:
                worker.join()
            self._collect(done, result)

    def _collect(self, done: queue.Queue, result: Result) -> None:
        collected = False
        while not done.empty():
            result.add(done.get())
            collected = True
        if collected:
            self.progress(result, False)


def _put(todo: queue.Queue, batch: list) -> bool:
    try:
        todo.put(batch, timeout=0.2)
    except queue.Full:
        return False
    return True


def _work(todo: queue.Queue, done: queue.Queue, write: Callable[[list], Tally]) -> None:
    try:
        while (batch := todo.get()) is not None:
            done.put(_guarded(write, batch))
    finally:
        connections.close_all()  # this thread's own database connections


def _guarded(write: Callable[[list], Tally], batch: list) -> Tally:
    try:
        with not_sampled():
            return write(batch)
    except Exception as exc:  # noqa: BLE001 - counted against the batch, the run goes on
        tally = Tally()
        tally.fail(f"batch of {len(batch)}", exc, len(batch))
        return tally


def _batches(items: Iterable[Any], size: int) -> Iterator[list]:
    iterator = iter(items)
    while True:
        batch: list = []
        try:
            for item in iterator:
                batch.append(item)
                if len(batch) == size:
                    break
        except Exception:
            # A warmer that raises stops there, but what it yielded before is as
            # good as any other item: write it, then report the error.
            if batch:
                yield batch
            raise
        if not batch:
            return
        yield batch


def _only(items: Iterable[Any], keys: frozenset[str]) -> Iterator[Any]:
    """The items whose key is in `keys`; stops once every one of them was seen."""
    left = set(keys)
    for item in items:
        key = item[0] if isinstance(item, (tuple, list)) and item else None
        if key in left:
            left.discard(key)
            yield item
            if not left:
                return


def _model_timeout(job: Job, registration: Any) -> Any:
    if job.timeout is not DEFAULT_TIMEOUT:
        return job.timeout
    return model_timeout(registration.timeout)  # the rule get_object follows


def _by_tags(batch: list, tally: Tally) -> dict[tuple[str, ...], dict[str, Any]]:
    """{tags: {key: value}}: one set_many each. Malformed items are failed here."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {(): {}}
    untagged = groups[()]
    for raw in batch:
        if type(raw) is tuple and len(raw) == 2 and type(raw[0]) is str:
            untagged[raw[0]] = raw[1]  # the common case, without _item's checks
            continue
        try:
            key, value, tags = _item(raw)
        except TypeError as exc:
            tally.fail(raw[0] if isinstance(raw, (tuple, list)) and raw else raw, exc)
            continue
        groups.setdefault(tags, {})[key] = value
    return groups


def _item(raw: Any) -> tuple[str, Any, tuple[str, ...]]:
    if not isinstance(raw, (tuple, list)) or len(raw) not in (2, 3):
        raise TypeError(f"a warmer yields (key, value) or (key, value, tags), got {raw!r:.80}")
    key, value, *rest = raw
    if not isinstance(key, str):
        raise TypeError(f"a cache key is a str, got {key!r:.80}")
    tags = rest[0] if rest else ()
    if isinstance(tags, str):
        raise TypeError(f"tags is a list of str, not the str {tags!r:.80}")
    return key, value, tuple(tags)


class _Target:
    """Writes one job's batches into one cache (from any thread)."""

    def __init__(self, request: Request, job: Job, alias: str, timeout: Any):
        self.request, self.alias, self.timeout = request, alias, timeout
        self.origin = job.origin
        record = record_of(caches[alias])
        # Remember who produced the keys that are hot, so that --hot can rewarm them.
        self.hot_keys = record.members() if record is not None and not request.dry_run else set()

    def write_items(self, batch: list) -> Tally:
        cache, tally = caches[self.alias], Tally()
        groups = _by_tags(batch, tally)
        produced = [key for data in groups.values() for key in data]
        tally.skipped += len(batch) - tally.failed - len(produced)  # a later item had the key
        if self.request.only_missing and produced:
            present = cache.get_many(produced)
            tally.skipped += len(present)
            for data in groups.values():
                for key in present.keys() & data.keys():
                    del data[key]
        if self.request.dry_run:
            tally.warmed += sum(map(len, groups.values()))
            return tally
        if hasattr(cache, "set_many_tagged") and len(groups) > 1:
            # Items with tags of their own: still one call for the whole batch.
            tagged = {k: (v, tags) for tags, data in groups.items() for k, v in data.items()}
            self._set_many_tagged(cache, tagged, tally)
        else:
            for tags, data in groups.items():
                if data:
                    self._set_many(cache, data, tags, tally)
        self._remember(cache, [(key, None) for key in produced])
        return tally

    def _set_many_tagged(self, cache: Any, tagged: dict, tally: Tally) -> None:
        try:
            not_stored = cache.set_many_tagged(tagged, self.timeout)
        except Exception:  # noqa: BLE001 - one bad value fails the whole call: find it
            for key, (value, tags) in tagged.items():
                self._set(cache, key, value, {"tags": tags} if tags else {}, tally)
            return
        for key in not_stored:
            tally.fail(key, NOT_TAKEN)
        tally.warmed += len(tagged) - len(not_stored)

    def _set_many(self, cache: Any, data: dict, tags: tuple, tally: Tally) -> None:
        extra = {"tags": tags} if tags else {}
        try:
            not_stored = cache.set_many(data, self.timeout, **extra)
        except Exception:  # noqa: BLE001 - one bad value fails the whole call: find it
            for key, value in data.items():
                self._set(cache, key, value, extra, tally)
            return
        for key in not_stored:
            tally.fail(key, NOT_TAKEN)
        tally.warmed += len(data) - len(not_stored)

    def _set(self, cache: Any, key: str, value: Any, extra: dict, tally: Tally) -> None:
        try:
            stored = cache.set(key, value, self.timeout, **extra)
        except Exception as exc:  # noqa: BLE001 - counted, the batch goes on
            tally.fail(key, exc)
        else:
            if stored is False:  # a TierCache that could not store it says so
                tally.fail(key, NOT_TAKEN)
            else:
                tally.warmed += 1

    def write_objects(self, queryset: models.QuerySet, pks: list) -> Tally:
        cache, tally, model = caches[self.alias], Tally(), queryset.model
        # The key and tags of an instance depend on its pk only: know them before loading.
        wanted = {}
        for pk in pks:
            key, _, tags = object_entry(model(pk=pk))
            wanted[key] = (pk, tags)
        loaded: dict[str, Any] = {}

        def load(missing: list[str]) -> dict[str, Any]:
            rows = queryset.filter(pk__in=[wanted[key][0] for key in missing])
            loaded.update({key: obj for key, obj, _ in map(object_entry, rows)})
            return dict(loaded)

        if self.request.dry_run:
            present = cache.get_many(list(wanted))
            load([key for key in wanted if key not in present])
        elif not hasattr(cache, "get_or_set_many"):
            raise TypeError(f"cache {self.alias!r} is not a TierCache; models cannot be warmed")
        else:
            cache.get_or_set_many({k: tags for k, (_, tags) in wanted.items()}, load, self.timeout)
            stored = cache.get_many(list(loaded))  # get_or_set_many does not say what it stored
            for key in loaded.keys() - stored.keys():
                tally.fail(key, NOT_STORED)
            self._remember(cache, [(key, pk) for key, (pk, _) in wanted.items()])
        tally.warmed = len(loaded) - tally.failed
        tally.skipped = len(wanted) - len(loaded)  # cached already, or deleted meanwhile
        return tally

    def _remember(self, cache: Any, produced: list[tuple[str, Any]]) -> None:
        if not self.hot_keys:
            return
        kind, name = self.origin
        origins = {}
        for key, pk in produced:
            made = cache.make_key(key)
            if made in self.hot_keys:
                origins[made] = json.dumps([kind, name, key, None if pk is None else str(pk)])
        if origins:
            record = record_of(cache)
            if record is not None:
                record.remember(origins)


def run(request: Request, progress: Progress | None = None) -> list[Result]:
    """Plan and run a request (the Celery task's whole job); WarmingError if it is wrong."""
    runner = Runner(request, progress)
    return [runner.run(job) for job in plan(request)]
