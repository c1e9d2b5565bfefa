"""Partition stores: where a partition's entries live."""

from __future__ import annotations

from typing import Any

from ..options import CLUSTER_SCHEME, MEMORY_SCHEME, SENTINEL_SCHEME
from .base import Store
from .cluster import ClusterStore
from .memory import MemoryStore
from .redis import RedisStore
from .sentinel import SentinelStore


def store_for(url: str, ns: str, options: dict[str, Any]) -> Store:
    scheme = url.partition("://")[0].lower()
    if scheme == MEMORY_SCHEME:
        return MemoryStore(url, ns, options)
    if scheme == SENTINEL_SCHEME:
        return SentinelStore(url, ns, options)
    if scheme == CLUSTER_SCHEME:
        return ClusterStore(url, ns, options)
    return RedisStore(url, ns, options)
