"""After a batch lands, get_object's entries of its rows hold what the drain wrote.

The drain's bulk statements invalidate the rows' instance tags once per batch,
under the model layer's write locks, so nothing read before the commit is
cached. An entry the cache held before the batch would then be a miss, and
the next read a query; instead the drain puts it back after the commit, from
one read of the batch's rows through ``get_objects`` (one query per model).

Why a read and not the claimed state: a direct write (mixed.py) waiting on the
drain's row locks may commit between the drain's commit and the put-back; the
claimed state would then be older than the row. The put-back goes through
``get_or_set_many``, which takes the tags' tokens before it reads: a direct
write that commits first is what the read sees, and one that locks the tags
after the tokens were taken makes the store a no-op. Either way the entry holds
the state the drain wrote or a newer one, never an older one.

Rows nobody read stay out of the cache: a batch of counters no one looks at
costs no query and no memory.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError
from django.db import models as db_models

from ..backend import tier_cache
from ..orm.cache_aside import get_objects, object_key
from ..orm.registry import is_registered, registration_for
from . import rows

logger = logging.getLogger("django_tiercache.write_behind")

Held = dict[type[db_models.Model], list[Any]]


def _pks_by_model(row_ids: Iterable[str]) -> Held:
    found: Held = defaultdict(list)
    for row in row_ids:
        model, pk = rows.parse_row(row)
        found[model].append(pk)
    return found


def held(row_ids: Iterable[str]) -> Held:
    """{model: pks} of the rows get_object has a live entry for: read before the drain."""
    found: Held = {}
    for model, pks in _pks_by_model(row_ids).items():
        if not is_registered(model):
            continue
        keys = {object_key(model, pk): pk for pk in pks}
        live = tier_cache(registration_for(model).cache_alias).get_many(list(keys))
        if live:
            found[model] = [keys[key] for key in live]
    return found


def put_back(before: Held, written: Iterable[str]) -> None:
    """Cache again, from the database after the commit, the held rows the drain wrote.

    The batch has landed whatever happens here: a failure costs a miss, and is logged.
    """
    landed = set(written)
    for model, pks in before.items():
        wanted = [pk for pk in pks if rows.row_id(model, pk) in landed]
        if not wanted:
            continue
        try:
            get_objects(model, wanted)
        except DatabaseError as exc:
            logger.warning(
                "write-behind: %s rows landed but were not cached again (%s); "
                "the next read loads them",
                model._meta.label,
                exc,
            )
