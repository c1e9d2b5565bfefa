"""django_tiercache: a partitioned, tagged, failure-tolerant Django cache backend.

Configure it in CACHES::

    CACHES = {"default": {
        "BACKEND": "django_tiercache.backend.TierCache",
        "LOCATION": ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"],
    }}

and read model data through it with model-driven invalidation::

    django_tiercache.register(Product)
    product = django_tiercache.get_object(Product, 7)
"""

from .cached import cached
from .orm.cache_aside import (
    acached_queryset,
    aget_object,
    aget_object_or_404,
    aget_objects,
    cached_queryset,
    get_object,
    get_object_or_404,
    get_objects,
)
from .orm.invalidation import invalidate_instance, invalidate_model
from .orm.registry import instance_tag, model_tag, register, unregister
from .warming import warmer
from .write_behind import write_through

from . import write_behind  # isort: skip

__version__ = "0.1.0"

__all__ = [
    "acached_queryset",
    "aget_object",
    "aget_object_or_404",
    "aget_objects",
    "cached",
    "cached_queryset",
    "get_object",
    "get_object_or_404",
    "get_objects",
    "instance_tag",
    "invalidate_instance",
    "invalidate_model",
    "model_tag",
    "register",
    "unregister",
    "warmer",
    "write_behind",
    "write_through",
]
