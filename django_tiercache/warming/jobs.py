"""Requests and jobs: what a warm_cache run (or task) asks for, and the units it runs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.db import models

from ..orm.registry import registered_models, registration_for

DEFAULT_BATCH_SIZE = 1000
DEFAULT_CONCURRENCY = 2  # encoding holds the GIL: more threads help only loads that wait (SQL)


class WarmingError(ValueError):
    """A warm request names something that does not exist; nothing was written."""


@dataclass
class Request:
    """What to warm and how: the options of warm_cache and of the Celery task."""

    names: list[str] = field(default_factory=list)
    all: bool = False
    models: list[str] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)
    cache: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    concurrency: int = DEFAULT_CONCURRENCY
    only_missing: bool = False
    dry_run: bool = False
    timeout: float | None = None
    hot: bool = False


@dataclass
class Job:
    """One warmer, model or group of hot keys to run: one row of the summary."""

    label: str
    alias: str | None  # None: the QuerySet's model's cache, else "default"
    origin: tuple[str, str]  # ("warmer", name) or ("model", "app_label.model")
    load: Callable[[], Any]  # -> an iterable of items, or a QuerySet
    timeout: Any = DEFAULT_TIMEOUT
    keys: frozenset[str] | None = None  # write only these keys (--hot)
    unplaced: int = 0  # hot keys no warmer or model is known to produce


def registered_model(label: str, where: str) -> type[models.Model]:
    try:
        model = apps.get_model(label)
        registration_for(model)
    except (LookupError, ValueError):  # no such model, or not registered (NotRegistered)
        choices = names_or_none(sorted(m._meta.label for m in registered_models()))
        raise WarmingError(
            f"{where} {label!r} is not a registered model. Registered models: {choices}."
        ) from None
    return model


def check_alias(alias: str, where: str) -> None:
    if alias not in settings.CACHES:
        configured = names_or_none(settings.CACHES)
        raise WarmingError(
            f"{where}: unknown cache alias {alias!r}. Configured caches: {configured}."
        )


def names_or_none(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"
