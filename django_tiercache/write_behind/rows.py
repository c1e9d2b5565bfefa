"""Rows as the journal spells them: "<app_label.model>:<pk as JSON>" and signed field values.

A row is named by its primary key *as the pk field converts it* (``to_python``),
so ``Counter(id="7")`` and ``Counter(id=7)`` are one row, not two that would
land in either order. Values are encoded per field (Django's JSON encoder:
dates, decimals, UUIDs as text), signed (signing.py), and decoded with the
field's own ``to_python``. A value the database would refuse, or that would
not survive the round trip (NaN, infinities, text over max_length, too many
digits), is refused at ``save()`` with InvalidWrite, before anything is queued.

``F("field") + n`` (or ``- n``) in an update is queued as an increment, kept
apart from values (signing.DELTA) and landed as ``SET field = field + n``.
"""

from __future__ import annotations

import copy
import decimal
import json
import math
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models.expressions import CombinedExpression, F, Value

from ..orm.registry import is_registered, registration_for
from . import signing
from .exceptions import InvalidWrite


class BadRow(ValueError):
    """A journal row the drain cannot apply: it is quarantined, never written."""


def label(model: type[models.Model]) -> str:
    concrete = model._meta.concrete_model or model
    return concrete._meta.label_lower


def row_id(model: type[models.Model], pk: Any) -> str:
    """The row's name; InvalidWrite for a pk its field does not take."""
    concrete = model._meta.concrete_model or model
    return f"{label(model)}:{_dump(canonical_pk(concrete, pk), 'pk', concrete)}"


def canonical_pk(model: type[models.Model], pk: Any) -> Any:
    field = model._meta.pk
    try:
        value = field.to_python(pk)
    except (ValidationError, OverflowError, TypeError, ValueError) as exc:
        raise InvalidWrite(
            f"{model.__name__} primary key {pk!r} is not a valid {type(field).__name__} "
            f"value ({_reason(exc)}); nothing was queued."
        ) from exc
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidWrite(f"{model.__name__} primary key {pk!r} cannot name a row.")
    return value


def parse_row(row: str) -> tuple[type[models.Model], Any]:
    """(model, pk) of a row; BadRow if it names no write-behind model or no valid pk."""
    name, _, pk_json = row.partition(":")
    try:
        model = apps.get_model(name)
    except (LookupError, ValueError) as exc:
        raise BadRow(f"{name!r} names no installed model") from exc
    if not (is_registered(model) and registration_for(model).write_behind):
        raise BadRow(f"{model._meta.label} is not registered with write_behind=True")
    try:
        pk = canonical_pk(model, json.loads(pk_json))
    except (ValueError, InvalidWrite) as exc:
        raise BadRow(f"{pk_json!r} is not a primary key of {model._meta.label}") from exc
    if row_id(model, pk) != row:
        raise BadRow(f"{row} is not the journal's name of {model._meta.label} pk {pk!r}")
    return model, pk


def concrete_fields(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


def encode(obj: models.Model, row: str, update_fields: Any = None) -> dict[str, str]:
    """{attname: signed text} of the fields to write; InvalidWrite for a value that cannot be."""
    model = type(obj)
    fields = concrete_fields(model)
    if update_fields is not None:
        by_name = {f.name: f for f in fields} | {f.attname: f for f in fields}
        unknown = set(update_fields) - set(by_name)
        if unknown:
            raise InvalidWrite(
                f"{model.__name__} has no concrete field(s) {sorted(unknown)} to write; "
                f"update_fields names fields of the model other than its primary key."
            )
        fields = list({by_name[name].attname: by_name[name] for name in update_fields}.values())
    encoded = {}
    for field in fields:
        value = field.value_from_object(obj)
        delta = _increment(field, value, model)
        if delta is not None:
            if update_fields is None:
                raise InvalidWrite(
                    f"{model.__name__}.{field.name} = F(...) needs update_fields naming it: "
                    f"an increment updates a row that exists."
                )
            text = _dump(delta, field.attname, model)
            encoded[field.attname] = signing.sign_value(row, field.attname, text, signing.DELTA)
            continue
        text = _dump(value, field.attname, model)
        _check_value(field, text, model)
        encoded[field.attname] = signing.sign_value(row, field.attname, text)
    return encoded


def _increment(field: models.Field, value: Any, model: type[models.Model]) -> Any:
    """n for ``F(field) + n`` (-n for ``- n``), None for a plain value; InvalidWrite otherwise."""
    if not hasattr(value, "resolve_expression"):
        return None
    if (
        isinstance(value, CombinedExpression)
        and isinstance(value.lhs, F)
        and getattr(value.lhs, "name", None) in (field.name, field.attname)
        and value.connector in (CombinedExpression.ADD, CombinedExpression.SUB)
        and isinstance(value.rhs, Value)
        and isinstance(value.rhs.value, (int, float, decimal.Decimal))
        and not isinstance(value.rhs.value, bool)
        and isinstance(field, (models.IntegerField, models.FloatField, models.DecimalField))
    ):
        amount = value.rhs.value
        _check_value(field, _dump(amount, field.attname, model), model)
        return amount if value.connector == CombinedExpression.ADD else -amount
    raise InvalidWrite(
        f"{model.__name__}.{field.name} = {value!r}: write-behind queues values and "
        f'increments (F("{field.name}") + n or - n on a number field), no other expression.'
    )


def _dump(value: Any, name: str, model: type[models.Model]) -> str:
    try:
        return json.dumps(value, cls=DjangoJSONEncoder, allow_nan=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidWrite(
            f"{model.__name__}.{name} = {type(value).__name__} value cannot be queued for "
            f"write-behind ({exc}); use values JSON can carry (finite numbers, text, dates, "
            f"decimals, UUIDs, lists and dicts), or save this row directly."
        ) from exc


def _check_value(field: models.Field, text: str, model: type[models.Model]) -> None:
    """What the database would refuse, refused now (a drain has no caller to tell)."""
    try:
        value = field.to_python(json.loads(text))
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("not a finite number")
        if isinstance(value, decimal.Decimal) and not value.is_finite():
            raise ValidationError("not a finite number")
        max_length = getattr(field, "max_length", None)
        if max_length is not None and isinstance(value, str) and len(value) > max_length:
            raise ValidationError(f"{len(value)} characters, more than max_length {max_length}")
        if isinstance(field, models.DecimalField) and value is not None:
            for validator in field.validators:
                validator(value)
    except (ValidationError, OverflowError, ValueError, TypeError) as exc:
        raise InvalidWrite(
            f"{model.__name__}.{field.attname}: {text} is not a valid value for a "
            f"{type(field).__name__} ({_reason(exc)}); nothing was queued."
        ) from exc


def _reason(exc: Exception) -> str:
    return "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)


@dataclass
class Decoded:
    values: dict[str, Any]  # attname -> python value
    deltas: dict[str, Any]  # attname -> increment

    def deltas_only(self) -> Decoded:
        return Decoded({}, self.deltas)


def decode(model: type[models.Model], row: str, fields: dict[str, str]) -> Decoded:
    """The journal's signed texts as python values; BadRow for any this site did not write."""
    by_attname = {f.attname: f for f in concrete_fields(model)}
    decoded = Decoded({}, {})
    for name, stored in fields.items():
        field = by_attname.get(name)
        if field is None:
            raise BadRow(f"{model._meta.label} has no field {name!r}")
        try:
            kind, text = signing.open_value(row, name, stored)
            value = field.to_python(json.loads(text))
        except signing.BadSignature as exc:
            raise BadRow(str(exc)) from exc
        except (ValidationError, ValueError, TypeError) as exc:
            raise BadRow(f"{name}: {stored[:80]!r} does not convert ({_reason(exc)})") from exc
        (decoded.deltas if kind == signing.DELTA else decoded.values)[name] = value
    return decoded


def build(model: type[models.Model], pk: Any, values: dict[str, Any], db: str) -> models.Model:
    """An instance as if loaded from the database, from a full pending save."""
    obj = model(**{model._meta.pk.attname: pk, **values})
    obj._state.adding = False
    obj._state.db = db
    return obj


def overlay(obj: models.Model, decoded: Decoded) -> models.Model:
    """A copy of `obj` with a partial pending update (values and increments) applied."""
    changed = copy.copy(obj)
    changed._state = copy.copy(obj._state)
    for name, value in decoded.values.items():
        setattr(changed, name, value)
    for name, delta in decoded.deltas.items():
        setattr(changed, name, getattr(changed, name) + delta)
    return changed
