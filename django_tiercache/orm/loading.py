"""How the cache reads the database: through the router, with a hint saying so.

Every read the cache makes to fill or check an entry (get_object's misses,
cached_queryset, write_through's fill, the consistency sampler) asks the router
``db_for_read(model, tiercache_load=True)``. A router with read replicas that lag
sends these to the primary, so a miss just after a write never caches a
replica's older row (which nothing would invalidate: the write's invalidation
came before it)::

    class PrimaryForTheCache:
        def db_for_read(self, model, **hints):
            return "default" if hints.get("tiercache_load") else "replica"
"""

from __future__ import annotations

from typing import Any

LOAD_HINTS = {"tiercache_load": True}


def loader(manager: Any) -> Any:
    """`manager` (a model's default or base manager) carrying the cache's load hint."""
    return manager.db_manager(hints={**manager._hints, **LOAD_HINTS})
