"""``cached``: cache-aside for functions and methods, sync and async.

    @cached(timeout=600, tags=lambda shop_id: [f"shop.shop:{shop_id}"])
    def best_sellers(shop_id: int) -> list[int]: ...

    best_sellers(7)              # computed once, then read from the cache
    best_sellers.invalidate(7)   # drop that one result

The key is the function's module and qualified name plus a digest of its
arguments written in a canonical form, so it is the same in every process and
after restarts (Python's ``hash()`` is randomized per process). Arguments
that have no stable form raise TypeError naming the argument; give such an
object a ``__cache_key__()`` method returning something that has one.

Misses go through ``get_or_set`` (single flight, and a value computed across
an invalidation of its tags is not stored). Hot keys are recomputed a little
before they expire, by one caller at a time in expectation (XFetch: Vattani,
Chierichetti and Lowenstein, VLDB 2015): a caller recomputes early when
``now - delta * beta * ln(random()) >= expiry``, delta being how long the
last computation took.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import hashlib
import inspect
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches

ENVELOPE = "django_tiercache.cached/1"
_SCALARS = (type(None), bool, int, float, str)
_TEXT_FORMS = (decimal.Decimal, uuid.UUID, datetime.date, datetime.time, datetime.timedelta)


def cached(
    timeout: float | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
    key_prefix: str | None = None,
    cache: str = "default",
    beta: float = 1.0,
) -> Callable[[Callable], Callable]:
    """Cache a function's results; see the module docstring.

    timeout: seconds (None: the cache's default); tags: a list, or a callable
    taking the function's arguments; key_prefix: instead of the function's
    module and qualified name; beta: XFetch eagerness (0 turns it off).
    """

    def decorate(func: Callable) -> Callable:
        name = key_prefix or f"{func.__module__}.{func.__qualname__}"
        signature = inspect.signature(func)

        def key_of(args: tuple, kwargs: dict) -> str:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            parts = [f"{arg}={stable_form(value, arg)}" for arg, value in bound.arguments.items()]
            digest = hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
            return f"cached:{name}:{digest}"

        def tags_of(args: tuple, kwargs: dict) -> list[str]:
            return list(tags(*args, **kwargs) if callable(tags) else tags or ())

        def options() -> dict[str, Any]:
            return {} if timeout is None else {"timeout": timeout}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                key, backend = key_of(args, kwargs), _backend(cache)
                entry = await sync_to_async(backend.get)(key)
                if _fresh(entry, beta):
                    return entry[1]
                started = time.monotonic()
                value = await func(*args, **kwargs)
                envelope = _envelope(value, time.monotonic() - started, timeout, backend)
                await sync_to_async(_store)(
                    backend, key, envelope, tags_of(args, kwargs), options()
                )
                return value

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                key, backend = key_of(args, kwargs), _backend(cache)
                entry = backend.get(key)
                if _fresh(entry, beta):
                    return entry[1]

                def compute() -> tuple:
                    started = time.monotonic()
                    value = func(*args, **kwargs)
                    return _envelope(value, time.monotonic() - started, timeout, backend)

                item_tags = tags_of(args, kwargs)
                if entry is None:  # a miss: single flight through get_or_set
                    return backend.get_or_set(key, compute, tags=item_tags, **options())[1]
                envelope = compute()  # an early recomputation (XFetch)
                _store(backend, key, envelope, item_tags, options())
                return envelope[1]

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            caches[cache].delete(key_of(args, kwargs))

        wrapper.invalidate = invalidate
        wrapper.cache_key = lambda *args, **kwargs: key_of(args, kwargs)
        return wrapper

    return decorate


def _backend(alias: str) -> Any:
    return caches[alias]


def _envelope(value: Any, delta: float, timeout: float | None, backend: Any) -> tuple:
    """What is stored: (marker, value, compute seconds, expiry as wall-clock time)."""
    seconds = backend.get_backend_timeout() if timeout is None else timeout
    expiry = None if seconds is None else time.time() + seconds
    return (ENVELOPE, value, delta, expiry)


def _fresh(entry: Any, beta: float) -> bool:
    """Is a stored envelope to be served (not a miss, not due for early recomputation)?"""
    if not (isinstance(entry, tuple) and len(entry) == 4 and entry[0] == ENVELOPE):
        return False
    _, _, delta, expiry = entry
    if expiry is None or beta <= 0:
        return True
    return time.time() - delta * beta * math.log(random.random() or 1e-300) < expiry  # noqa: S311 - not a secret


def _store(backend: Any, key: str, envelope: tuple, tags: list[str], options: dict) -> None:
    if hasattr(backend, "invalidate_tags"):
        backend.set(key, envelope, tags=tags, **options)
    else:
        backend.set(key, envelope, **options)


def stable_form(value: Any, argument: str) -> str:
    """A text that stands for value the same way in every process; TypeError if none."""
    kind = type(value)
    if kind in _SCALARS:
        return f"{kind.__name__}:{value!r}"
    if kind is bytes:
        return f"bytes:{value.hex()}"
    if isinstance(value, enum.Enum):
        return f"enum:{kind.__module__}.{kind.__qualname__}:{stable_form(value.value, argument)}"
    if isinstance(value, _TEXT_FORMS):
        return f"{kind.__name__}:{value.isoformat() if hasattr(value, 'isoformat') else value}"
    if isinstance(value, (list, tuple)):
        inner = ",".join(stable_form(v, argument) for v in value)
        return f"{kind.__name__}:[{inner}]"
    if isinstance(value, (set, frozenset)):
        return f"set:{{{','.join(sorted(stable_form(v, argument) for v in value))}}}"
    if isinstance(value, dict):
        items = sorted(
            f"{stable_form(k, argument)}={stable_form(v, argument)}" for k, v in value.items()
        )
        return f"dict:{{{','.join(items)}}}"
    if isinstance(value, type):
        return f"class:{value.__module__}.{value.__qualname__}"
    special = getattr(value, "__cache_key__", None)
    if callable(special):
        return f"key:{stable_form(special(), argument)}"
    meta = getattr(value, "_meta", None)
    if meta is not None and getattr(value, "pk", None) is not None:
        return f"model:{meta.label_lower}:{stable_form(value.pk, argument)}"
    raise TypeError(
        f"cached: argument {argument!r} ({kind.__module__}.{kind.__qualname__}) has no "
        f"stable cache key; pass plain values, a saved model instance, or give the class "
        f"a __cache_key__() method."
    )
