"""Which models take part in model-driven invalidation, and their tags.

Every registered model has a *model tag* ("shop.product"), invalidated by any
change to its table, and each instance an *instance tag* ("shop.product:7"),
invalidated when that row changes. Instance tags belong to the family
"shop.product:*" (see tags.entry_tags), which bulk changes whose rows are not
known invalidate at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.db import models

from ..exceptions import NotRegistered
from ..storage.tags import MAX_TAG_LENGTH

TagsFunction = Callable[[Any], Iterable[str]]

# Primary keys longer than this are hashed in tags and object keys, which keeps
# object keys within the 250 characters Django's key check allows.
MAX_READABLE_PK = 100
HASHED = "#"


@dataclass
class Registration:
    model: type[models.Model]
    cache_alias: str = "default"
    tags: TagsFunction | None = None
    parents: tuple[str, ...] = ()  # names of ForeignKey fields whose targets to invalidate
    timeout: Any = None  # None: the cache's default timeout
    write_behind: bool = False  # may go through write_behind.save() (see write_behind/)

    def parent_fields(self) -> list[models.ForeignKey]:
        return [self.model._meta.get_field(name) for name in self.parents]  # type: ignore[misc]


_registry: dict[type[models.Model], Registration] = {}

# Registrations made while models load (the class decorator) wait here until the
# app registry is ready: wiring reads relations that only exist then.
_pending: list[type[models.Model]] = []
_pending_lock = threading.Lock()

# (connect, disconnect) pairs called with a model when it is wired or unregistered;
# added through on_wire(): invalidation.py adds its signal receivers so, and the
# registry need not know them.
wiring: list[tuple[Callable[[type[models.Model]], None], Callable[[type[models.Model]], None]]] = []


def on_wire(
    connect: Callable[[type[models.Model]], None], disconnect: Callable[[type[models.Model]], None]
) -> None:
    """Call `connect(model)` when a model is wired, `disconnect(model)` when unregistered.

    Idempotent. Registered models wired before this call are not connected
    retroactively: register hooks when the module that owns them loads.
    """
    if (connect, disconnect) not in wiring:
        wiring.append((connect, disconnect))


def model_label(model: type[models.Model]) -> str:
    return model._meta.label_lower


def model_tag(model: type[models.Model]) -> str:
    """ "app_label.modelname": invalidated by any change to the model's rows."""
    return model_label(_concrete(model))


def instance_tag(obj: models.Model, pk: Any = None) -> str:
    """ "app_label.modelname:<pk>": invalidated when that row changes."""
    return pk_tag(type(obj), obj.pk if pk is None else pk)


def pk_tag(model: type[models.Model], pk: Any) -> str:
    """The instance tag of the row with primary key `pk` (see pk_token)."""
    return f"{model_tag(model)}:{pk_token(model, pk)}"


def pk_token(model: type[models.Model], pk: Any) -> str:
    """The primary key as instance tags and object keys spell it.

    A key that reads well in a tag (printable, no spaces, short enough) is kept
    as it is: "shop.product:7", "shop.coupon:summer-sale". Any other (spaces,
    control characters, 300 characters) becomes "#" and a hash of it, the same
    in every process. A kept key never starts with "#" and is never "*" (the
    family tag), so two primary keys never share a tag.
    """
    text = str(pk)
    room = min(MAX_READABLE_PK, MAX_TAG_LENGTH - len(model_tag(model)) - 1)
    if 0 < len(text) <= room and text.isprintable() and " " not in text:
        if text[0] != HASHED and text != "*":
            return text
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    return HASHED + digest.hexdigest()


def family_tag(model: type[models.Model]) -> str:
    """ "app_label.modelname:*": covers every instance tag of the model."""
    return f"{model_tag(model)}:*"


def _concrete(model: type[models.Model]) -> type[models.Model]:
    # Proxy models share their concrete model's table, and so its tags.
    return model._meta.concrete_model or model


def register(
    model: type[models.Model] | None = None,
    *,
    tags: TagsFunction | None = None,
    parents: Iterable[str] = (),
    cache: str = "default",
    timeout: Any = None,
    write_behind: bool = False,
) -> Any:
    """Register a model for model-driven invalidation.

    Usable as a class decorator in models.py::

        @register(parents=["category"], tags=lambda p: [f"brand:{p.brand_id}"])
        class Product(models.Model): ...

    or as ``register(Product)`` from ``AppConfig.ready()`` (for models you do not
    own, such as ``auth.User``). A registration made while models load is wired
    (signals, many-to-many through models) when django_tiercache's app is ready;
    one made later is wired at once. django_tiercache must be in INSTALLED_APPS.

    `parents` names ForeignKey fields: a change to the row also invalidates the
    instance tag of the row it points to (old and new target). `tags` returns
    more tags to invalidate when an instance changes; a name that is not a
    ForeignKey raises ImproperlyConfigured (tiercache.E007) when it is wired.
    `write_behind=True` lets ``write_behind.save(obj)`` queue the model's writes.
    """
    if model is None:
        return lambda m: register(
            m, tags=tags, parents=parents, cache=cache, timeout=timeout, write_behind=write_behind
        )
    registration = Registration(model, cache, tags, tuple(parents), timeout, write_behind)
    if apps.models_ready:
        _validate_parents(registration)  # before recording it: a bad call changes nothing
        _registry[model] = registration
        _wire(model)
    else:
        _registry[model] = registration
        with _pending_lock:
            _pending.append(model)
    return model


def unregister(model: type[models.Model]) -> None:
    _registry.pop(model, None)
    with _pending_lock:
        if model in _pending:
            _pending.remove(model)
    for _, disconnect in wiring:
        disconnect(model)


def wire_pending() -> None:
    """Wire the registrations made while models loaded; called from AppConfig.ready().

    Idempotent: each pending registration is wired once, and wiring twice is harmless
    anyway (receivers are connected with a dispatch_uid).
    """
    with _pending_lock:
        pending, _pending[:] = list(_pending), []
    for model in pending:
        registration = _registry.get(model)
        if registration is None:
            continue
        try:
            _validate_parents(registration)
        except ImproperlyConfigured:
            del _registry[model]
            raise
        _wire(model)


def _wire(model: type[models.Model]) -> None:
    for connect, _ in wiring:
        connect(model)


def _validate_parents(registration: Registration) -> None:
    model = registration.model
    for name in registration.parents:
        try:
            relation = model._meta.get_field(name)
        except FieldDoesNotExist:
            relation = None
        if not isinstance(relation, models.ForeignKey):
            found = "no such field" if relation is None else f"a {type(relation).__name__}"
            foreign_keys = [f.name for f in model._meta.fields if isinstance(f, models.ForeignKey)]
            raise ImproperlyConfigured(
                f"tiercache.E007: register({model.__name__}, parents=[{name!r}]): "
                f"{model._meta.label}.{name} is {found}, not a ForeignKey. HINT: parents= "
                f"names ForeignKey fields of the model; {model.__name__} has "
                f"{foreign_keys or 'none'}."
            )


def registration_for(model: type[models.Model]) -> Registration:
    """The model's registration; a proxy or child inherits its concrete model's."""
    for candidate in (model, _concrete(model)):
        if candidate in _registry:
            return _registry[candidate]
    raise NotRegistered(
        f"{model_label(model)} is not registered with django_tiercache; "
        f"call django_tiercache.register({model.__name__}) first"
    )


def is_registered(model: type[models.Model]) -> bool:
    return model in _registry or _concrete(model) in _registry


def registered_models() -> list[type[models.Model]]:
    return list(_registry)
