"""The warmer registry: @warmer("name"), and the `warmers` modules of installed apps."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.utils.module_loading import autodiscover_modules

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Warmer:
    name: str
    function: Callable[..., Any]
    cache: str | None = None  # None: the model's cache for a QuerySet, else "default"
    timeout: Any = DEFAULT_TIMEOUT

    @property
    def source(self) -> str:
        return f"{self.function.__module__}.{self.function.__qualname__}"

    @property
    def takes_keys(self) -> bool:
        """Can `warm_cache --hot` ask it for some keys only (a `keys` parameter)?"""
        return "keys" in inspect.signature(self.function).parameters


_warmers: dict[str, Warmer] = {}
_warmers_lock = threading.Lock()


def warmer(
    name: str, *, cache: str | None = None, timeout: Any = DEFAULT_TIMEOUT
) -> Callable[[F], F]:
    """Register a function as the warmer `name` (run by ``manage.py warm_cache name``).

    The function returns an iterable of ``(key, value)`` or ``(key, value, tags)``
    (a generator is consumed lazily, batch by batch), or a QuerySet of a
    registered model. `cache` is the alias to fill (default: the model's for a
    QuerySet, else "default"); `timeout` the entries' timeout. A function that
    accepts a ``keys`` argument is given the hot keys it produced by
    ``warm_cache --hot``, so that it can load only those::

        @django_tiercache.warmer("profiles", cache="sessions", timeout=3600)
        def profiles(keys=None):
            users = User.objects.filter(is_active=True)
            if keys is not None:
                users = users.filter(pk__in=[k.split(":")[1] for k in keys])
            for user in users.iterator():
                yield f"profile:{user.pk}", build_profile(user)

    Modules named ``warmers`` in installed apps are imported before a run.
    """
    if not isinstance(name, str) or not name or any(ch.isspace() for ch in name):
        raise ValueError(f"A warmer name is a non-empty string without spaces, got {name!r}.")

    def register(function: F) -> F:
        new = Warmer(name, function, cache, timeout)
        with _warmers_lock:
            old = _warmers.get(name)
            if old is not None and old.source != new.source:
                raise ValueError(f"Warmer {name!r} is already registered by {old.source}.")
            _warmers[name] = new
        return function

    return register


def registered_warmers() -> dict[str, Warmer]:
    """Every registered warmer by name, sorted."""
    with _warmers_lock:
        return dict(sorted(_warmers.items()))


def unregister_warmer(name: str) -> None:
    with _warmers_lock:
        _warmers.pop(name, None)


def discover() -> None:
    """Import the ``warmers`` module of every installed app, as the admin does for ``admin``."""
    autodiscover_modules("warmers")
