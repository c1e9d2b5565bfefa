"""warm_cache --hot: rewarm the hottest keys of a cache from their producers.

The hot-key record (hotkeys/) says which keys are read most and which warmer or
model wrote each while it was hot; the jobs built here rewrite them, hottest
first, through the usual runner.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT

from ..hotkeys.record import record_of
from .jobs import Job, Request, WarmingError, registered_model
from .warmers import registered_warmers


def hot_jobs(request: Request) -> list[Job]:
    """Jobs that rewarm the hot keys of request.cache from their producers, hottest first."""
    alias = request.cache or "default"
    record = record_of(caches[alias])
    if record is None:
        raise WarmingError(
            f"--hot: cache {alias!r} keeps no hot-key record; set "
            f"CACHES[{alias!r}]['OPTIONS']['HOT_KEYS'] = True and let it serve reads."
        )
    hottest = [key for key, _ in record.top()]
    origins = record.origins(hottest)
    producers: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for made in hottest:
        if made in origins:
            kind, name, key, pk = origins[made]
            producers.setdefault((kind, name), []).append((key, pk))
    jobs = [
        _hot_job(kind, name, found, alias, request) for (kind, name), found in producers.items()
    ]
    placed = [job for job in jobs if job is not None]
    unplaced = len(hottest) - sum(len(job.keys or ()) for job in placed)
    if unplaced:
        placed.append(_unplaced_job(alias, unplaced))
    return placed


def _hot_job(
    kind: str, name: str, found: list[tuple[str, str | None]], alias: str, request: Request
) -> Job | None:
    keys = frozenset(key for key, _ in found)
    pks = [pk for _, pk in found if pk is not None]
    timeout = DEFAULT_TIMEOUT if request.timeout is None else request.timeout
    label = f"hot {name}"
    if kind == "model":
        try:
            model = registered_model(name, "--hot: model")
        except WarmingError:
            return None  # unregistered since: counted with the unplaced keys
        queryset = model._default_manager.filter(pk__in=pks)
        return Job(label, alias, (kind, name), lambda: queryset, timeout, keys)
    warmer = registered_warmers().get(name)
    if warmer is None:
        return None
    if request.timeout is None:
        timeout = warmer.timeout

    def load() -> Any:
        if warmer.takes_keys:
            return warmer.function(keys=sorted(keys))
        loaded = warmer.function()
        return loaded.filter(pk__in=pks) if hasattr(loaded, "filter") and pks else loaded

    return Job(label, alias, (kind, name), load, timeout, keys)


def _unplaced_job(alias: str, count: int) -> Job:
    # Keys read often that no warmer wrote while they were hot: shown, not rewarmed.
    return Job("hot, producer unknown", alias, ("warmer", ""), list, unplaced=count)
