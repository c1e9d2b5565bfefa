"""The journal's signatures: only this site can write a row the drain will apply.

Whoever can write to the journal's Redis could otherwise write any table the
drain reaches. So every value a save queues, and every row's operation, is
stored with an HMAC under SECRET_KEY (a salt of its own), bound to the row
(model label and primary key), the field name and the text itself. The drain
and the readers of pending state check it; a value that fails is quarantined
as a dead letter and never applied. SECRET_KEY_FALLBACKS are accepted when
checking, so a key rotation does not strand rows queued before it.

Values are signed one by one, not a row at a time, because the journal merges
partial updates inside Redis (scripts.ENQUEUE): each field keeps the signature
it was queued with, whatever else is merged beside it.

Stored form: ``<mac>=<json>`` for a value, ``<mac>+<json>`` for an increment
(``F("f") + n``); the mac is 16 bytes of HMAC-SHA256, base64url (22 characters).
"""

from __future__ import annotations

import base64

from django.conf import settings
from django.utils.crypto import constant_time_compare, salted_hmac

SALT = "django_tiercache.write_behind.journal"
VALUE, DELTA = "=", "+"
_MAC_LENGTH = 22


class BadSignature(ValueError):
    """A journal text this site did not write (or wrote under a key it no longer has)."""


def _mac(message: str, secret: str) -> str:
    digest = salted_hmac(SALT, message, secret=secret, algorithm="sha256").digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _secrets() -> list[str]:
    return [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


def _field_message(row: str, name: str, kind: str, text: str) -> str:
    return f"{row}\x1f{name}\x1f{kind}{text}"


def sign_value(row: str, name: str, text: str, kind: str = VALUE) -> str:
    """The stored form of field `name`'s JSON `text` in `row`."""
    return _mac(_field_message(row, name, kind, text), settings.SECRET_KEY) + kind + text


def open_value(row: str, name: str, stored: str) -> tuple[str, str]:
    """(kind, JSON text) of a stored value; BadSignature if this site did not sign it."""
    mac, kind = stored[:_MAC_LENGTH], stored[_MAC_LENGTH : _MAC_LENGTH + 1]
    text = stored[_MAC_LENGTH + 1 :]
    if kind not in (VALUE, DELTA) or not _valid(mac, _field_message(row, name, kind, text)):
        raise BadSignature(f"field {name!r} of {row} is not signed by this site")
    return kind, text


def sign_op(row: str, op: str) -> str:
    """The signature of `row`'s operation (save, update or delete)."""
    return _mac(f"{row}\x1fop\x1f{op}", settings.SECRET_KEY)


def check_op(row: str, op: str, mac: str) -> None:
    if not _valid(mac, f"{row}\x1fop\x1f{op}"):
        raise BadSignature(f"the {op!r} of {row} is not signed by this site")


def _valid(mac: str, message: str) -> bool:
    return any(constant_time_compare(mac, _mac(message, secret)) for secret in _secrets())
