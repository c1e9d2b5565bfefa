"""Partition stores: where a partition's entries live."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..options import MEMORY_SCHEME
from .base import Store
from .memory import MemoryStore
from .redis import RedisStore


def store_for(url: str, ns: str, options: dict[str, Any]) -> Store:
    if urlsplit(url).scheme == MEMORY_SCHEME:
        return MemoryStore(url, ns, options)
    return RedisStore(url, ns, options)
