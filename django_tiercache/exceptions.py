"""Exceptions raised by django_tiercache."""

import pickle

from redis.exceptions import ConnectionError as RedisConnectionError


class SerializationError(pickle.PicklingError, TypeError):
    """A value could not be serialized; nothing was stored.

    It is a ``pickle.PicklingError`` (what Django's own backends raise for an
    unpicklable value) and a ``TypeError`` (what a JSON serializer raises).
    """


class NotRegistered(LookupError):
    """The model was not registered with django_tiercache.register() (or not for the
    feature asked of it, such as write-behind)."""


class PartitionUnavailable(RedisConnectionError):
    """A partition's circuit breaker is open: the call was not attempted."""


class InvalidationIncomplete(RedisConnectionError):
    """A tag invalidation could not be made safe on every partition.

    Raised (or logged, with OPTIONS["INVALIDATION_FAILURE"] = "log") when a partition missed an
    invalidation and the fence that guards it could not be recorded on all
    the other partitions, so the missed partition might serve stale entries
    when it comes back. ``tags``: every tag invalidated (none for ``clear()``);
    the message names the first few.
    """

    tags: tuple[str, ...] = ()
