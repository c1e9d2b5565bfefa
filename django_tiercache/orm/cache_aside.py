"""Reading model data through the cache: get_object, get_object_or_404, get_objects,
cached_queryset.

Entries are tagged so that model-driven invalidation (invalidation.py) finds
them: an instance under its instance tag, a query result under the model tag
of every registered model the query reads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import ValidationError
from django.db import models
from django.http import Http404
from django.shortcuts import get_object_or_404 as _django_get_object_or_404

from .. import conf
from ..backend import tier_cache
from ..storage import bridge
from . import consistency
from .loading import LOAD_HINTS, loader
from .querysets import models_read, queryset_key
from .registry import (
    is_registered,
    model_label,
    model_tag,
    pk_tag,
    pk_token,
    registration_for,
)

# Readers of state newer than the database, for models registered with
# write_behind=True: write_behind/reads.py adds its own when it loads (the app
# imports it at readiness). Each takes (model, pks) *before* the cache is read
# and returns a function of {pk: instance} that applies the pending writes it
# found. Before, because a drain may land a write and drop it from the journal
# between the two reads: read in this order, a write missing from the journal
# has landed and invalidated the cache before the cache is read.
_pending_readers: list[Any] = []
T = TypeVar("T")


def add_pending_reader(reader: Any) -> None:
    """Let get_object()/get_objects() see writes the database does not have yet."""
    if reader not in _pending_readers:
        _pending_readers.append(reader)


class _Absent:
    """Cached in place of a row that does not exist (so misses are cached too)."""

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


def object_key(model: type[models.Model], pk: Any) -> str:
    """The cache key of a row; odd primary keys are hashed (see registry.pk_token)."""
    return f"tiercache:object:{model_label(model)}:{pk_token(model, pk)}"


def object_entry(obj: models.Model) -> tuple[str, models.Model, tuple[str, ...]]:
    """(key, value, tags): how get_object caches an instance (used by warmers too)."""
    return object_key(type(obj), obj.pk), obj, (pk_tag(type(obj), obj.pk),)


def model_timeout(registration_timeout: Any) -> Any:
    """The timeout get_object() and cached_queryset() store entries with."""
    if registration_timeout is not None:
        return registration_timeout
    configured = conf.get_config()["MODEL_TIMEOUT"]
    return DEFAULT_TIMEOUT if configured is None else configured


def _pk(model: type[models.Model], pk: Any) -> Any:
    # "7" and 7 must share one entry: normalise the way the database field would.
    return model._meta.pk.to_python(pk)


def get_object(model: type[models.Model], pk: Any) -> models.Model:
    """The instance with primary key `pk`, through the cache; raises model.DoesNotExist.

    A missing row is cached too, under the same instance tag, so creating it
    invalidates the "does not exist" entry.
    """
    found = get_objects(model, [pk])
    if not found:
        missing = model.DoesNotExist  # type: ignore[attr-defined]
        raise missing(f"{model.__name__} matching pk={pk!r} does not exist.")
    return next(iter(found.values()))


def get_object_or_404(klass: Any, *args: Any, **kwargs: Any) -> models.Model:
    """Django's get_object_or_404(), through the cache when the lookup is by pk alone.

    ``klass`` is a model, a manager or a queryset; ``args`` and ``kwargs`` are
    lookups, as in Django. A lookup by primary key alone (``pk=``, ``id=``,
    ``pk__exact=``...) on the model's whole default manager is answered by
    get_object(), a missing row cached as missing too; anything else (other
    lookups, Q objects, a filtered queryset or a manager that filters) goes to
    the database as Django's own would, uncached::

        product = django_tiercache.get_object_or_404(Product, pk=pk)         # cached
        product = django_tiercache.get_object_or_404(Product, slug=slug)     # database
        mine = django_tiercache.get_object_or_404(request.user.orders, pk=pk)  # database

    ``get_object_or_404(Product, pk)``, a bare pk as the only positional
    argument, is kept as a shorthand for ``pk=pk``.
    """
    queryset = _queryset(klass)
    model = queryset.model
    shorthand = len(args) == 1 and not kwargs and not isinstance(args[0], models.Q)
    filters: tuple[Any, ...] = () if shorthand else args
    lookups: dict[str, Any] = {"pk": args[0]} if shorthand else kwargs
    if filters or len(lookups) != 1 or not _whole_default(queryset):
        return in_database(_django_get_object_or_404)(queryset, *filters, **lookups)
    lookup, pk = next(iter(lookups.items()))
    if lookup not in _pk_lookups(model):
        return in_database(_django_get_object_or_404)(queryset, **lookups)
    try:
        return get_object(model, pk)
    except model.DoesNotExist as exc:
        raise Http404(f"No {model._meta.object_name} matches the given query.") from exc
    except (ValueError, TypeError, ValidationError):
        # A pk the field cannot read ("abc" for an integer): let the database
        # path raise exactly what Django's own get_object_or_404() raises.
        return in_database(_django_get_object_or_404)(queryset, **lookups)


def _queryset(klass: Any) -> models.QuerySet:
    if hasattr(klass, "_default_manager"):
        return klass._default_manager.all()
    if isinstance(klass, models.Manager):
        return klass.all()
    if isinstance(klass, models.QuerySet):
        return klass
    name = klass.__name__ if isinstance(klass, type) else klass.__class__.__name__
    raise ValueError(
        "First argument to get_object_or_404() must be a Model, Manager, or "
        f"QuerySet, not '{name}'."
    )


def _whole_default(queryset: models.QuerySet) -> bool:
    """Is this every row of the model's default manager (no filter, slice, extra or
    annotation)? Only then can a cached row stand for what the queryset would find."""
    query = queryset.query
    plain = queryset.model._default_manager.all().query
    return (
        not query.where
        and not plain.where
        and not query.is_sliced
        and not query.extra
        and not query.annotations
        and query.combinator is None
        and queryset.db == queryset.model._default_manager.db
    )


def _pk_lookups(model: type[models.Model]) -> set[str]:
    names = {"pk", model._meta.pk.name, model._meta.pk.attname}
    return names | {f"{name}__exact" for name in names}


def get_objects(model: type[models.Model], pks: Iterable[Any]) -> dict[Any, models.Model]:
    """{pk: instance} for the pks that exist, in one multi-get (one query for misses)."""
    registration = registration_for(model)
    pks = [_pk(model, pk) for pk in pks]
    keys = {object_key(model, pk): pk for pk in pks}

    loaded: set[str] = set()

    def load(missing: list[str]) -> dict[str, Any]:
        loaded.update(missing)
        # Wrapped here, on a miss: wrapping costs a hit a tenth of its time.
        rows = in_database(_in_bulk)(model, [keys[k] for k in missing])
        return {key: rows.get(keys[key], ABSENT) for key in missing}

    # Pending writes are newer than the database: one more trip, first (see above).
    readers = _pending_readers if registration.write_behind else []
    appliers = [in_database(read)(model, pks) for read in readers]
    cache = tier_cache(registration.cache_alias)
    tags = _InstanceTags(model, keys)
    values = cache.get_or_set_many(tags, load, timeout=model_timeout(registration.timeout))
    found = {keys[k]: v for k, v in values.items() if not isinstance(v, _Absent)}
    if consistency.sampling():
        consistency.offer(model, {k: v for k, v in values.items() if k not in loaded}, keys)
    for apply in appliers:
        found = apply(found)
    return found


def _in_bulk(model: type[models.Model], pks: list[Any]) -> dict[Any, models.Model]:
    return loader(model._default_manager).in_bulk(pks)


class _InstanceTags(Mapping[str, tuple[str, ...]]):
    """{object key: (instance tag,)} for get_or_set_many, each tag made when asked:
    only the keys that missed are asked for theirs, so a hit makes none."""

    def __init__(self, model: type[models.Model], keys: dict[str, Any]):
        self.model, self._keys = model, keys

    def __getitem__(self, key: str) -> tuple[str, ...]:
        return (pk_tag(self.model, self._keys[key]),)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def cached_queryset(
    qs: models.QuerySet, timeout: Any = None, tags: Iterable[str] = ()
) -> list[Any]:
    """The queryset's rows as a list, cached under the model tag of every registered
    model any part of it reads (joins, subqueries, unions, select_related and
    prefetch_related included) plus `tags`; keyed by the whole queryset (querysets.py).
    Its query asks the router with the cache's load hint (orm/loading.py)."""
    qs = qs.all()
    qs._add_hints(**LOAD_HINTS)  # type: ignore[attr-defined] # the router's choice, told why
    read = models_read(qs)
    registered = [m for m in read if is_registered(m)]
    if not registered:
        raise TypeError(
            f"cached_queryset() needs a query on a registered model; this one reads "
            f"{sorted(model_label(m) for m in read)}"
        )
    alias = registration_for(registered[0]).cache_alias
    all_tags = [*map(model_tag, registered), *tags]
    cache_timeout = timeout if timeout is not None else model_timeout(None)
    rows: list[Any] = tier_cache(alias).get_or_set(
        queryset_key(qs), in_database(lambda: list(qs.all())), timeout=cache_timeout, tags=all_tags
    )
    return rows


# -- the async forms: the same code, its cache I/O awaited on the loop (storage/bridge.py) --


def in_database(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` (which queries the database, or the journal's sync clients), run in a
    thread when called for a coroutine: Django's ORM refuses to run inside an event loop."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> T:
        if bridge.in_bridge():
            return bridge.await_only(sync_to_async(fn)(*args, **kwargs))
        return fn(*args, **kwargs)

    return call


async def _in_loop(model: type[models.Model], fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if tier_cache(registration_for(model).cache_alias).native_async:
        return await bridge.run(fn, *args, **kwargs)
    return await sync_to_async(fn)(*args, **kwargs)


async def aget_object(model: type[models.Model], pk: Any) -> models.Model:
    """get_object() for a coroutine: the cache read on the loop, a miss's query in a thread."""
    return await _in_loop(model, get_object, model, pk)


async def aget_objects(model: type[models.Model], pks: Iterable[Any]) -> dict[Any, models.Model]:
    """get_objects() for a coroutine (see aget_object)."""
    return await _in_loop(model, get_objects, model, list(pks))


async def aget_object_or_404(klass: Any, *args: Any, **kwargs: Any) -> models.Model:
    """get_object_or_404() for a coroutine (see aget_object)."""
    model = _queryset(klass).model
    if not is_registered(model):
        return await sync_to_async(_django_get_object_or_404)(klass, *args, **kwargs)
    return await _in_loop(model, get_object_or_404, klass, *args, **kwargs)


async def acached_queryset(
    qs: models.QuerySet, timeout: Any = None, tags: Iterable[str] = ()
) -> list[Any]:
    """cached_queryset() for a coroutine (see aget_object)."""
    registered = [m for m in models_read(qs) if is_registered(m)]
    if not registered:
        return cached_queryset(qs, timeout, tags)  # raises its TypeError
    return await _in_loop(registered[0], cached_queryset, qs, timeout, tags)
