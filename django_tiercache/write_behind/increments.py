"""Increments (``F("hits") + n``) coalesced in the journal, atomically across processes.

An increment is stored as a signed delta (signing.DELTA). A second increment
of the same field adds to it; an increment over a pending *value* (a save, or
an update that set the field) becomes that value plus n. Redis cannot sign the
sum, so the sum is made here and written with a compare-and-set: ENQUEUE is
given the text it expects the field to hold and refuses (-3) if another
process wrote it meanwhile; api.py reads again and retries.

The drain lands a delta as ``UPDATE ... SET f = f + total`` and records the
version it landed in the database, in the same transaction (landed.py), so a
drain killed between its commit and its acknowledgement never adds it twice.
"""

from __future__ import annotations

import decimal
import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from . import signing

_KIND_AT = 22  # signing's mac length: the kind character follows it


def has_increments(fields: dict[str, str]) -> bool:
    return any(stored[_KIND_AT : _KIND_AT + 1] == signing.DELTA for stored in fields.values())


def names(fields: dict[str, str]) -> list[str]:
    return [n for n, stored in fields.items() if stored[_KIND_AT : _KIND_AT + 1] == signing.DELTA]


def merge(row: str, fields: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """`fields` with each increment added to the field's pending text in `current`."""
    merged = dict(fields)
    for name, text in current.items():
        if not text:
            continue  # nothing pending for the field: the delta alone
        _, delta_json = signing.open_value(row, name, fields[name])
        try:
            kind, pending_json = signing.open_value(row, name, text)
        except signing.BadSignature:
            continue  # not ours: overwritten by our delta; the drain never trusted it
        total = _add(json.loads(pending_json), json.loads(delta_json))
        merged[name] = signing.sign_value(row, name, json.dumps(total, cls=DjangoJSONEncoder), kind)
    return merged


def _add(pending: Any, delta: Any) -> Any:
    if pending is None:
        return None  # NULL + n is NULL in SQL too
    if isinstance(pending, str) or isinstance(delta, str):  # decimals travel as text
        return str(decimal.Decimal(str(pending)) + decimal.Decimal(str(delta)))
    return pending + delta
