"""Model changes become tag invalidations: signal receivers and ORM bulk paths.

Covered for every registered model, without touching the model class:

- Model.save() and Model.delete() (pre/post_save, pre/post_delete), and
  QuerySet.delete(), which Django runs through the same signals row by row;
  a changed parent foreign key invalidates the old parent as well as the new;
- many-to-many add/remove/clear on either side (m2m_changed), the same from
  both: the rows on the other side take their parents and registered tags along;
- QuerySet.update(), bulk_update() and bulk_create(), which send no signals:
  django_tiercache wraps those three QuerySet methods once, at start-up. Rows
  that bulk_update() and bulk_create() touch are known, so their instance tags
  are invalidated; update() can touch any row, so it invalidates the model's
  whole family ("app.model:*") instead.

Raw SQL and database-level cascades are caught at the SQL level (raw_sql.py);
writes inside database functions or triggers are not: call invalidate_model().
"""

from __future__ import annotations

import functools
import threading
from collections import defaultdict
from typing import Any

from django.db import models, router
from django.db.models.signals import (
    m2m_changed,
    post_delete,
    post_init,
    post_save,
    pre_delete,
    pre_save,
)

from .. import conf
from ..backend import declare_write_locks
from ..storage import hooks
from . import registry, transactions
from .registry import (
    family_tag,
    instance_tag,
    is_registered,
    model_tag,
    pk_tag,
    registration_for,
)

_bulk = threading.local()  # set while a wrapped bulk method runs: its own signals are covered
LOADED_PARENTS = "_tiercache_loaded_parents"


def tags_for(obj: models.Model, *, with_pk: bool = True) -> dict[str, set[str]]:
    """What a change to `obj` invalidates, per cache alias."""
    registration = registration_for(type(obj))
    tags = {model_tag(type(obj))}
    if with_pk and obj.pk is not None:
        tags.add(instance_tag(obj))
    for field in registration.parent_fields():
        for parent_pk in {
            getattr(obj, field.attname),
            getattr(obj, LOADED_PARENTS, {}).get(field.attname),
        }:
            if parent_pk is not None:
                tags.add(pk_tag(field.related_model, parent_pk))
    if registration.tags is not None:
        tags.update(registration.tags(obj))
    return {registration.cache_alias: tags}


def _merge(*groups: dict[str, set[str]]) -> dict[str, set[str]]:
    merged: dict[str, set[str]] = defaultdict(set)
    for group in groups:
        for alias, tags in group.items():
            merged[alias] |= tags
    return merged


def _model_wide(model: type[models.Model]) -> dict[str, set[str]]:
    """Every entry about the model: its model tag and all its instances."""
    registration = registration_for(model)
    tags = {model_tag(model), family_tag(model)}
    tags.update(family_tag(f.related_model) for f in registration.parent_fields())
    return {registration.cache_alias: tags}


# -- signal receivers --


def _remember_parents(sender: type, instance: models.Model, **kwargs: Any) -> None:
    fields = registration_for(sender).parent_fields()
    if fields:
        setattr(instance, LOADED_PARENTS, {f.attname: getattr(instance, f.attname) for f in fields})


def _before_save(
    sender: type, instance: models.Model, raw: bool = False, using: str = "default", **kwargs: Any
) -> None:
    adding = instance._state.adding
    transactions.before(sender, tags_for(instance, with_pk=not adding), using)


def _after_save(
    sender: type, instance: models.Model, using: str = "default", **kwargs: Any
) -> None:
    transactions.after(sender, tags_for(instance), using)
    _remember_parents(sender, instance)


def _before_delete(
    sender: type, instance: models.Model, using: str = "default", **kwargs: Any
) -> None:
    if not getattr(_bulk, "active", False):
        transactions.before(sender, tags_for(instance), using)


def _after_delete(
    sender: type, instance: models.Model, using: str = "default", **kwargs: Any
) -> None:
    transactions.after(sender, tags_for(instance), using)


def _m2m_changed(
    sender: type,
    instance: models.Model,
    action: str,
    reverse: bool,
    model: type[models.Model],
    pk_set: set | None,
    using: str,
    **kwargs: Any,
) -> None:
    if action not in (
        "pre_add",
        "pre_remove",
        "pre_clear",
        "post_add",
        "post_remove",
        "post_clear",
    ):
        return
    groups = []
    if is_registered(type(instance)):
        groups.append(tags_for(instance))
    if is_registered(model):
        groups.append(_other_side(sender, instance, action, model, pk_set, using))
    step = transactions.before if action.startswith("pre_") else transactions.after
    step(type(instance), _merge(*groups), using)


CLEARED = "_tiercache_m2m_cleared"


def _other_side(
    through: type, instance: models.Model, action: str, model: Any, pk_set: Any, using: str
) -> dict[str, set[str]]:
    """What the change invalidates on the side of the rows added, removed or
    cleared: as much as a change to each of those rows would (its parents, its
    registered tags), whichever side the change was made from."""
    registration = registration_for(model)
    alias = registration.cache_alias
    needs_rows = bool(registration.parent_fields()) or registration.tags is not None
    if pk_set is not None:
        if not needs_rows:
            return {alias: {model_tag(model), *(pk_tag(model, pk) for pk in pk_set)}}
        rows = model._default_manager.using(using).filter(pk__in=pk_set)
        return _merge({alias: {model_tag(model)}}, *map(tags_for, rows))
    # clear() lists no rows: every entry of the model goes, and the rows still
    # linked before it (read at pre_clear, kept for post_clear) take their
    # parents and registered tags with them.
    wide = {alias: {model_tag(model), family_tag(model)}}
    if not needs_rows:
        return wide
    if action == "post_clear":
        return _merge(wide, getattr(instance, CLEARED, {}))
    linked = _linked(through, instance, model, using)
    found = _merge(*map(tags_for, linked)) if linked is not None else _model_wide(model)
    setattr(instance, CLEARED, found)
    return _merge(wide, found)


def _linked(through: Any, instance: models.Model, model: Any, using: str) -> Any:
    """The rows of `model` linked to `instance` through `through`, or None when
    the through table cannot say which column is which (a model linked to itself)."""
    ends = [f for f in through._meta.fields if f.is_relation]
    mine = [f for f in ends if f.related_model is type(instance)._meta.concrete_model]
    theirs = [f for f in ends if f.related_model is model._meta.concrete_model]
    if len(mine) != 1 or len(theirs) != 1 or mine[0] is theirs[0]:
        return None
    links = through._default_manager.using(using).filter(**{mine[0].attname: instance.pk})
    pks = links.values(theirs[0].attname)
    return model._default_manager.using(using).filter(pk__in=pks)


RECEIVERS = (
    (post_init, _remember_parents),
    (pre_save, _before_save),
    (post_save, _after_save),
    (pre_delete, _before_delete),
    (post_delete, _after_delete),
)


def _uid(receiver: Any, model: Any) -> str:
    return f"django_tiercache:{receiver.__name__}:{model._meta.label_lower}"


def _through_models(model: type[models.Model]) -> set[type[models.Model]]:
    forward = {f.remote_field.through for f in model._meta.local_many_to_many}
    backward = {r.through for r in model._meta.related_objects if r.many_to_many}  # type: ignore[attr-defined]
    return {m for m in forward | backward if m is not None}


def connect(model: type[models.Model]) -> None:
    registration = registration_for(model)
    # Readers must know how long a writer's locks may last, to stay safe when a
    # partition loses them: every process registers, so every process declares.
    declare_write_locks(registration.cache_alias, conf.get_config()["WRITE_LOCK_TIMEOUT"])
    tracks_parents = bool(registration.parents)
    for signal, receiver in RECEIVERS:
        if signal is not post_init or tracks_parents:  # post_init runs for every row loaded
            signal.connect(receiver, sender=model, dispatch_uid=_uid(receiver, model))
    for through in _through_models(model):
        m2m_changed.connect(_m2m_changed, sender=through, dispatch_uid=_uid(_m2m_changed, through))
    install_queryset_hooks()


def disconnect(model: type[models.Model]) -> None:
    for signal, receiver in RECEIVERS:
        signal.disconnect(sender=model, dispatch_uid=_uid(receiver, model))


# -- QuerySet bulk methods, which send no signals --


def _wrap(method: Any, tags_before: Any, tags_after: Any) -> Any:
    @functools.wraps(method)
    def wrapper(qs: models.QuerySet, *args: Any, **kwargs: Any) -> Any:
        if getattr(_bulk, "active", False) or not is_registered(qs.model):
            return method(qs, *args, **kwargs)
        if args and not isinstance(args[0], (list, tuple)):
            args = (list(args[0]), *args[1:])  # objs may be a generator: read it once
        elif "objs" in kwargs:
            kwargs["objs"] = list(kwargs["objs"])
        using = qs._db or router.db_for_write(qs.model)  # type: ignore[attr-defined]
        transactions.before(qs.model, tags_before(qs, *args, **kwargs), using)
        _bulk.active = True
        try:
            result = method(qs, *args, **kwargs)
        finally:
            _bulk.active = False
        transactions.after(qs.model, tags_after(qs, *args, **kwargs), using)
        return result

    wrapper.tiercache_wrapped = True  # type: ignore[attr-defined]
    transactions.SPAN_CODES.add(wrapper.__code__)  # type: ignore[attr-defined] # a write runs in it
    return wrapper


def _model_wide_tags(qs: models.QuerySet, *args: Any, **kwargs: Any) -> dict[str, set[str]]:
    return _model_wide(qs.model)


def _objs_tags(qs: models.QuerySet, objs: Any, *args: Any, **kwargs: Any) -> dict[str, set[str]]:
    return _merge(
        *(tags_for(obj) for obj in objs),
        {registration_for(qs.model).cache_alias: {model_tag(qs.model)}},
    )


_hooks_lock = threading.Lock()


def install_queryset_hooks() -> None:
    """Wrap QuerySet.update/bulk_update/bulk_create/delete once per process."""
    with _hooks_lock:
        if getattr(models.QuerySet.update, "tiercache_wrapped", False):
            return
        models.QuerySet.update = _wrap(models.QuerySet.update, _model_wide_tags, _model_wide_tags)  # type: ignore[method-assign]
        models.QuerySet.bulk_update = _wrap(models.QuerySet.bulk_update, _objs_tags, _objs_tags)  # type: ignore[method-assign]
        models.QuerySet.bulk_create = _wrap(models.QuerySet.bulk_create, _objs_tags, _objs_tags)  # type: ignore[method-assign]
        # delete() sends per-row signals; locking the family once up front spares
        # one lock per row (the rows' own post_delete events still queue their tags).
        models.QuerySet.delete = _wrap(models.QuerySet.delete, _model_wide_tags, _model_wide_tags)  # type: ignore[method-assign]


# -- explicit invalidation --


def invalidate_model(model: type[models.Model], using: str | None = None) -> None:
    """Invalidate everything cached about `model` (after raw SQL, for example).

    Inside a transaction it takes effect when the transaction commits.
    """
    transactions.invalidate_now(model, _model_wide(model), using or router.db_for_write(model))


def invalidate_instance(obj: models.Model, using: str | None = None) -> None:
    """Invalidate what is cached about one row (and the model's query results)."""
    model = type(obj)
    transactions.invalidate_now(model, tags_for(obj), using or router.db_for_write(model))


hooks.add_fill_guard(transactions.refuses_fill)
registry.on_wire(connect, disconnect)
