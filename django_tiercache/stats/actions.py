"""What the statistics page can do to a cache: each action a POST, logged as a LogEntry.

An action takes the cache alias and the submitted form and returns what it did,
as one sentence for the admin message and the LogEntry; it raises ActionError
when the form is wrong (nothing was done). Actions whose feature is not
installed are not offered: running a warmer needs django_tiercache.warming;
the write-behind actions (flush now, retry or drop dead letters) need a model
registered with write_behind=True.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches

from ..storage.tags import validate_tags
from . import recent
from .collection import recorder_of
from .conf import get_config


class ActionError(ValueError):
    """The form asks for something that cannot be done; nothing was done."""


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    run: Callable[[str, Any], str]  # (alias, request.POST) -> what was done
    fields: tuple[str, ...] = ()


def invalidate_tags(alias: str, data: Any) -> str:
    tags = [t for t in re.split(r"[\s,]+", data.get("tags", "")) if t]
    if not tags:
        raise ActionError("Give at least one tag to invalidate.")
    try:
        tags = list(validate_tags(tags))
    except (TypeError, ValueError) as exc:
        raise ActionError(str(exc)) from None
    cache: Any = caches[alias]  # a TierCache: tiercache_aliases() was checked
    cache.invalidate_tags(*tags)
    return f"Invalidated {len(tags)} tag(s) in cache {alias!r}: {', '.join(tags)}."


def reset_statistics(alias: str, data: Any) -> str:
    recorder = recorder_of(caches[alias])
    if recorder.sink is None:
        raise ActionError(f"Statistics are off for cache {alias!r}; there is nothing to reset.")
    recorder.sink.reset()
    return f"Reset the statistics of cache {alias!r}."


def run_warmer(alias: str, data: Any) -> str:
    warming = _warming()
    name = data.get("warmer", "")
    if warming is None or name not in warming.registered_warmers():
        raise ActionError(f"No warmer named {name!r} is registered.")
    # One thread: a web request should not open more database connections.
    request = warming.Request(names=[name], cache=alias, concurrency=1)
    try:
        results = warming.run(request)
    except warming.WarmingError as exc:
        raise ActionError(str(exc)) from None
    return " ".join(_summary(result) for result in results)


def _summary(result: Any) -> str:
    done = (
        f"Ran warmer {result.label!r} on cache {result.alias!r}: {result.items} items, "
        f"{result.warmed} warmed, {result.skipped} skipped, {result.failed} failed "
        f"in {result.seconds:.2f} s."
    )
    return done + (f" Stopped by {result.error}." if result.error else "")


def _warming() -> Any:
    """django_tiercache.warming when it is installed, else None."""
    try:
        module = importlib.import_module("django_tiercache.warming")
    except ImportError:
        return None
    return module if hasattr(module, "registered_warmers") else None


def write_behind() -> Any:
    """django_tiercache.write_behind.report when some model uses write-behind, else None."""
    try:
        module = importlib.import_module("django_tiercache.write_behind.report")
    except ImportError:
        return None
    return module if module.in_use() else None


def write_behind_report() -> dict[str, Any] | None:
    """The write-behind figures, read from the journal at most once per STATS_INTERVAL."""
    module = write_behind()
    if module is None:
        return None
    report: dict[str, Any] | None = recent.remembered(
        ("write_behind",), get_config()["STATS_INTERVAL"], module.report
    )
    return report


def _write_behind_action(name: str) -> Callable[[str, Any], str]:
    def run(alias: str, data: Any) -> str:
        module = write_behind()
        if module is None:
            raise ActionError("No model is registered with write_behind=True.")
        result: str = getattr(module, name)()
        return result

    return run


def warmer_names() -> list[str]:
    warming = _warming()
    if warming is None:
        return []
    warming.discover()
    return list(warming.registered_warmers())


ACTIONS = {
    action.name: action
    for action in (
        Action("invalidate_tags", "Invalidate tags", invalidate_tags, ("tags",)),
        Action("reset_statistics", "Reset statistics", reset_statistics),
        Action("run_warmer", "Run a warmer", run_warmer, ("warmer",)),
        Action("flush_write_behind", "Flush write-behind", _write_behind_action("flush_now")),
        Action(
            "retry_dead_letters", "Retry dead letters", _write_behind_action("retry_dead_letters")
        ),
        Action("drop_dead_letters", "Drop dead letters", _write_behind_action("drop_dead_letters")),
    )
}


def available() -> dict[str, Action]:
    """The actions whose feature exists here."""
    offered = dict(ACTIONS)
    if _warming() is None:
        del offered["run_warmer"]
    if write_behind() is None:
        for name in ("flush_write_behind", "retry_dead_letters", "drop_dead_letters"):
            del offered[name]
    return offered
