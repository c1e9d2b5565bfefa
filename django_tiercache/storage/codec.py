"""Turning values into the bytes a partition stores, and back.

A stored body is one of:

- ``b"123"``: a plain integer, kept as digits (as Django's and django-redis' Redis
  backends do) so that incr/decr stay atomic inside Redis. Digits are parsed
  with ``int()``, never unpickled.
- ``b"v" + mac + data``: serialized (and perhaps compressed) data with a keyed
  BLAKE2b MAC over the serializer and compressor classes, the cache key and the
  data. The MAC key derives from SECRET_KEY, so bytes that someone else planted
  in Redis are never unpickled; and since the MAC names the classes that wrote
  the data, bytes a json or msgpack cache stored (text a user chose, say) never
  reach a pickle cache that shares the prefix and SECRET_KEY either.
- ``b"u" + data``: the same without a MAC, only when OPTIONS["SIGNED"] is False.

A tagged entry carries a header in front of its body; the stores add and strip
it (see stores/lua.py), so the codec never sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from django_redis.compressors.identity import IdentityCompressor
from django_redis.exceptions import CompressorError
from django_redis.serializers.pickle import PickleSerializer

from ..exceptions import SerializationError

SIGNED = ord("v")
UNSIGNED = ord("u")
MAC_SIZE = 16
INT64 = range(-(2**63), 2**63)
DIGITS = frozenset(b"-0123456789")


class Tampered(Exception):
    """A stored body failed its integrity check; it must read as a miss."""


class Signer:
    """Keyed BLAKE2b MACs bound to a context and the cache key, with
    SECRET_KEY_FALLBACKS honoured."""

    def __init__(self, secrets: list[str], context: bytes = b""):
        # Keying a BLAKE2b state costs more than copying a keyed one: key once,
        # and feed the context (the same for every entry) once too.
        self._keyed = []
        for secret in secrets:
            keyed = hashlib.blake2b(
                key=hashlib.sha256(b"django_tiercache.codec:" + secret.encode()).digest(),
                digest_size=MAC_SIZE,
            )
            keyed.update(len(context).to_bytes(4, "big") + context)
            self._keyed.append(keyed)

    @classmethod
    def from_settings(cls, context: bytes = b"") -> Signer:
        fallbacks = list(getattr(settings, "SECRET_KEY_FALLBACKS", []))
        return cls([settings.SECRET_KEY, *fallbacks], context)

    @staticmethod
    def _mac(keyed: Any, key: bytes, data: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(len(key).to_bytes(4, "big") + key)
        mac.update(data)
        return mac.digest()

    def sign(self, key: bytes, data: bytes) -> bytes:
        return self._mac(self._keyed[0], key, data)

    def verify(self, key: bytes, data: bytes, mac: bytes) -> bool:
        for keyed in self._keyed:
            if hmac.compare_digest(self._mac(keyed, key, data), mac):
                return True
        return False


class Codec:
    """Serializer + compressor (both django-redis classes) + signature."""

    def __init__(self, options: dict[str, Any]):
        self.serializer = import_string(options["SERIALIZER"])(options=options)
        self.compressor = import_string(options["COMPRESSOR"])(options=options)
        # The MAC names the classes that wrote an entry, so that one cache never
        # decodes another's bytes: a pickle cache would otherwise unpickle text that
        # a json or msgpack cache under the same prefix stored for a user. Entries
        # signed before the classes were part of the MAC read as misses.
        context = f"{_dotted(self.serializer)}\n{_dotted(self.compressor)}".encode()
        self.signer = Signer.from_settings(context) if options["SIGNED"] else None
        self._identity = type(self.compressor) is IdentityCompressor
        # The read path's serializer call: pickle's own, skipping the wrapper
        # (a get_many decodes a hundred values), when nothing is compressed.
        plain_pickle = self._identity and type(self.serializer) is PickleSerializer
        self._loads_plain = pickle.loads if plain_pickle else None

    def encode(self, key: str, value: Any) -> bytes:
        if type(value) is int and value in INT64:
            return b"%d" % value
        try:
            data = self.compressor.compress(self.serializer.dumps(value))
        except Exception as exc:  # pickle, json and msgpack each raise their own types
            raise SerializationError(
                f"Cannot serialize the value for cache key {key!r} ({type(value).__name__}): {exc}"
            ) from exc
        if self.signer is None:
            return b"u" + data
        return b"v" + self.signer.sign(key.encode(), data) + data

    def decode(self, key: str, body: bytes) -> Any:
        """The value, or raise Tampered for bytes this application did not write."""
        kind = body[0] if body else None
        signer = self.signer
        if kind == SIGNED and signer is not None and len(signer._keyed) == 1:
            # The common case inlined (get_many decodes a hundred of these per call).
            data = body[1 + MAC_SIZE :]
            mac = signer._keyed[0].copy()
            encoded = key.encode()
            mac.update(len(encoded).to_bytes(4, "big") + encoded)
            mac.update(data)
            if not hmac.compare_digest(mac.digest(), body[1 : 1 + MAC_SIZE]):
                raise Tampered("bad signature")
            if self._loads_plain is not None:
                return self._loads_plain(data)  # noqa: S301 - verified: this application wrote it
            return self.serializer.loads(self._decompressed(data))
        if kind in DIGITS:
            try:
                return int(body)
            except ValueError:
                raise Tampered("not an integer") from None
        return self.serializer.loads(self.verified(key, body))

    def decode_keeping(self, key: str, body: bytes) -> tuple[Any, bytes | None]:
        """(value, its verified serialized bytes, or None for a plain integer);
        the L1 tier decodes a fresh value from those bytes on each hit."""
        if body and body[0] in DIGITS:
            return self.decode(key, body), None
        data = self.verified(key, body)
        return self.serializer.loads(data), data

    def verified(self, key: str, body: bytes) -> bytes:
        """The serialized data in a body; Tampered for bytes this application did not write."""
        kind = body[0] if body else None
        if kind == SIGNED and self.signer is not None:
            mac, data = body[1 : 1 + MAC_SIZE], body[1 + MAC_SIZE :]
            if not self.signer.verify(key.encode(), data, mac):
                raise Tampered("bad signature")
        elif kind == UNSIGNED and self.signer is None:
            data = body[1:]
        else:
            raise Tampered("unsigned" if kind == UNSIGNED else "unknown format")
        return self._decompressed(data)

    def _decompressed(self, data: bytes) -> bytes:
        if self._identity:
            return data
        try:
            return self.compressor.decompress(data)
        except CompressorError:
            return data  # stored uncompressed: django-redis compressors skip short values


def _dotted(part: object) -> str:
    return f"{type(part).__module__}.{type(part).__qualname__}"
