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

With ``stale_while_revalidate=S`` an entry stays in the cache S seconds past
its timeout; a caller that finds it there returns the old result at once
unless it is the one caller that claimed the recomputation (a claim on the
key's partition, as single flight takes), which computes and stores the new one.

Clocks: "fresh until" is a wall-clock time written by whichever process
computed the result, and only decides *when to recompute* (XFetch, and stale
versus fresh). How long a result can be served at all is the entry's TTL in
Redis (timeout + stale_while_revalidate), counted by Redis itself, so a
process whose clock is wrong recomputes too early or too late but can never
keep a result alive past that TTL (nor can L1, whose copies never outlive
their entry's PTTL).
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

from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import caches

from .storage import bridge, single_flight

ENVELOPE = "django_tiercache.cached/1"
_SCALARS = (type(None), bool, int, float, str)
_TEXT_FORMS = (decimal.Decimal, uuid.UUID, datetime.date, datetime.time, datetime.timedelta)


def _tags_of(tags: Any, signature: inspect.Signature) -> Callable[[tuple, dict], list[str]]:
    """How a call's tags are found: a fixed list, or the tags callable given the
    arguments it asks for. A callable of no arguments is called with none
    (``tags=lambda: ["shop.shop:*"]``); one whose parameters are some of the
    function's, by name, gets those (``tags=lambda shop_id: ...`` on
    ``def best_sellers(shop_id, limit=10)``, or on a method, without self);
    any other is given the arguments as the function was."""
    if not callable(tags):
        fixed = list(tags or ())
        return lambda args, kwargs: fixed
    try:
        wanted = inspect.signature(tags).parameters
    except (TypeError, ValueError):  # a builtin without a signature: as the function was
        return lambda args, kwargs: list(tags(*args, **kwargs))
    variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in wanted.values())
    if not wanted:
        return lambda args, kwargs: list(tags())
    if not variadic and set(wanted) <= set(signature.parameters):

        def by_name(args: tuple, kwargs: dict) -> list[str]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return list(tags(**{n: bound.arguments[n] for n in wanted}))

        return by_name
    return lambda args, kwargs: list(tags(*args, **kwargs))


def cached(
    timeout: float | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] | None = None,
    key_prefix: str | None = None,
    cache: str = "default",
    beta: float = 1.0,
    stale_while_revalidate: float = 0,
) -> Callable[[Callable], Callable]:
    """Cache a function's results; see the module docstring.

    timeout: seconds (None: the cache's default); tags: a list, or a callable
    taking the function's arguments (all of them as the function does, or only
    some, named as the function names them), or none; key_prefix: instead of the function's
    module and qualified name; beta: XFetch eagerness (0 turns it off);
    stale_while_revalidate: seconds past `timeout` during which the old result
    is still returned while one caller computes the new one.
    """
    if stale_while_revalidate < 0:
        raise ValueError(
            f"cached: stale_while_revalidate must be 0 (off) or a number of seconds, "
            f"got {stale_while_revalidate!r}"
        )

    def decorate(func: Callable) -> Callable:
        name = key_prefix or f"{func.__module__}.{func.__qualname__}"
        signature = inspect.signature(func)
        tags_of = _tags_of(tags, signature)

        def key_of(args: tuple, kwargs: dict) -> str:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            parts = [f"{arg}={stable_form(value, arg)}" for arg, value in bound.arguments.items()]
            digest = hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()
            return f"cached:{name}:{digest}"

        def lookup(args: tuple, kwargs: dict, call: Callable[[], Any]) -> Any:
            """The cached result, computing it with call() when due (any thread)."""
            backend = _backend(cache)
            policy = _Policy(backend, timeout, beta, stale_while_revalidate)
            item_tags = tags_of(args, kwargs)
            return policy.result(key_of(args, kwargs), item_tags, call)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if getattr(_backend(cache), "native_async", False):
                    # The lookup on this loop (storage/bridge.py): the function is
                    # awaited here, once per missed key (single flight).
                    def call() -> Any:
                        return bridge.await_only(func(*args, **kwargs))

                    return await bridge.run(lookup, args, kwargs, call)
                # Another backend: the whole lookup runs in a worker thread (so that
                # concurrent callers can share one load), and the coroutine, when
                # it must run, back on this event loop.
                call = async_to_sync(functools.partial(func, *args, **kwargs))
                return await sync_to_async(lookup, thread_sensitive=False)(args, kwargs, call)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return lookup(args, kwargs, functools.partial(func, *args, **kwargs))

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            caches[cache].delete(key_of(args, kwargs))

        wrapper.invalidate = invalidate
        wrapper.cache_key = lambda *args, **kwargs: key_of(args, kwargs)
        return wrapper

    return decorate


def _backend(alias: str) -> Any:
    return caches[alias]


class _Policy:
    """When a stored result is served, recomputed early, or served stale."""

    def __init__(self, backend: Any, timeout: float | None, beta: float, stale: float):
        self.backend, self.beta, self.stale = backend, beta, stale
        self.fresh_for = backend.default_timeout if timeout is None else timeout
        # Redis keeps the entry for the stale window too: its TTL, not any
        # process's clock, bounds how long a result can be served at all.
        self.options = {} if self.fresh_for is None else {"timeout": self.fresh_for + stale}

    def result(self, key: str, tags: list[str], call: Callable[[], Any]) -> Any:
        entry = self.backend.get(key)
        if not _is_envelope(entry):  # a miss: single flight through get_or_set
            return self._get_or_set(key, lambda: self._envelope(call), tags)[1]
        _, value, delta, expiry = entry
        now = time.time()
        if expiry is None or (now < expiry and not _due(now, delta, self.beta, expiry)):
            return value
        if now >= expiry and self.stale > 0:
            return self._revalidate(key, tags, call, value)
        envelope = self._envelope(call)  # an early recomputation (XFetch)
        self._store(key, envelope, tags)
        return envelope[1]

    def _revalidate(self, key: str, tags: list[str], call: Callable[[], Any], stale: Any) -> Any:
        """One caller computes the new result; the others get the stale one meanwhile."""
        release = self._claim(key)
        if release is None:
            return stale
        try:
            envelope = self._envelope(call)
            self._store(key, envelope, tags)
            return envelope[1]
        finally:
            release()

    def _claim(self, key: str) -> Callable[[], None] | None:
        if hasattr(self.backend, "_single_flight"):  # a TierCache: a claim on its partition
            made = self.backend.make_and_validate_key(key)
            return single_flight.revalidation(self.backend, made)
        claim = f"{key}:revalidating"  # any other backend: add() is atomic enough
        if not self.backend.add(claim, 1, timeout=30):
            return None
        return lambda: self.backend.delete(claim)

    def _envelope(self, call: Callable[[], Any]) -> tuple:
        """What is stored: (marker, value, compute seconds, fresh until as a wall-clock time)."""
        started = time.monotonic()
        value = call()
        delta = time.monotonic() - started
        expiry = None if self.fresh_for is None else time.time() + self.fresh_for
        return (ENVELOPE, value, delta, expiry)

    def _get_or_set(self, key: str, compute: Callable[[], tuple], tags: list[str]) -> tuple:
        if hasattr(self.backend, "invalidate_tags"):
            return self.backend.get_or_set(key, compute, tags=tags, **self.options)
        return self.backend.get_or_set(key, compute, **self.options)

    def _store(self, key: str, envelope: tuple, tags: list[str]) -> None:
        if hasattr(self.backend, "invalidate_tags"):
            self.backend.set(key, envelope, tags=tags, **self.options)
        else:
            self.backend.set(key, envelope, **self.options)


def _is_envelope(entry: Any) -> bool:
    return isinstance(entry, tuple) and len(entry) == 4 and entry[0] == ENVELOPE


def _due(now: float, delta: float, beta: float, expiry: float) -> bool:
    """XFetch: recompute early when now - delta * beta * ln(random()) >= expiry."""
    if beta <= 0:
        return False
    return now - delta * beta * math.log(random.random() or 1e-300) >= expiry  # noqa: S311 - not a secret


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
