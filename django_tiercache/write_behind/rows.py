"""Rows as the journal spells them: "<app_label.model>:<pk as JSON>" and field values as JSON.

Values are encoded per field (Django's JSON encoder: dates, decimals, UUIDs as
text) and decoded with the field's own ``to_python``, so what a drain writes is
what the model would have saved. A value that does not survive the round trip
is refused at ``save()``, before anything is queued.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from .exceptions import InvalidWrite


def row_id(model: type[models.Model], pk: Any) -> str:
    concrete = model._meta.concrete_model or model
    return f"{concrete._meta.label_lower}:{_dump(pk, 'pk', concrete)}"


def parse_row(row: str) -> tuple[type[models.Model], Any]:
    label, pk_json = row.split(":", 1)
    model = apps.get_model(label)
    return model, model._meta.pk.to_python(json.loads(pk_json))


def concrete_fields(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def encode(obj: models.Model, update_fields: Any = None) -> dict[str, str]:
    """{attname: JSON text} of the fields to write; InvalidWrite for a value that cannot be."""
    model = type(obj)
    fields = concrete_fields(model)
    if update_fields is not None:
        wanted = set(update_fields)
        by_name = {f.name: f for f in fields} | {f.attname: f for f in fields}
        unknown = wanted - set(by_name)
        if unknown:
            raise InvalidWrite(
                f"{model.__name__} has no concrete field(s) {sorted(unknown)} to write; "
                f"update_fields names fields of the model other than its primary key."
            )
        fields = [by_name[name] for name in wanted]
    encoded = {}
    for field in fields:
        value = field.value_from_object(obj)
        text = _dump(value, field.attname, model)
        _check_round_trip(field, text, model)
        encoded[field.attname] = text
    return encoded


def _dump(value: Any, name: str, model: type[models.Model]) -> str:
    try:
        return json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError) as exc:
        raise InvalidWrite(
            f"{model.__name__}.{name} = {type(value).__name__} value cannot be queued for "
            f"write-behind ({exc}); use values JSON can carry (numbers, text, dates, "
            f"decimals, UUIDs, lists and dicts), or save this row directly."
        ) from exc


def _check_round_trip(field: models.Field, text: str, model: type[models.Model]) -> None:
    try:
        field.to_python(json.loads(text))
    except ValidationError as exc:
        raise InvalidWrite(
            f"{model.__name__}.{field.attname}: {text} is not a valid value for a "
            f"{type(field).__name__} ({'; '.join(exc.messages)}); nothing was queued."
        ) from exc


def decode(model: type[models.Model], fields: dict[str, str]) -> dict[str, Any]:
    """{attname: python value} from the journal's JSON texts."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return {name: by_attname[name].to_python(json.loads(text)) for name, text in fields.items()}


def build(model: type[models.Model], pk: Any, fields: dict[str, str], db: str) -> models.Model:
    """An instance as if loaded from the database, from a full pending save."""
    obj = model(**{model._meta.pk.attname: pk, **decode(model, fields)})
    obj._state.adding = False
    obj._state.db = db
    return obj


def overlay(obj: models.Model, fields: dict[str, str]) -> models.Model:
    """A copy of `obj` with a partial pending update applied."""
    changed = copy.copy(obj)
    changed._state = copy.copy(obj._state)
    for name, value in decode(type(obj), fields).items():
        setattr(changed, name, value)
    return changed
