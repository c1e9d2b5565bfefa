"""Which increments the database already has: exactly-once for ``F("f") + n``.

Values can be written twice harmlessly; an increment cannot. So a drain that
lands increments records, in the same transaction, the journal version it
landed for each row (models.LandedIncrement), and skips a claimed version the
database already has: that is a drain that committed and died before its ACK.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any

from django.utils import timezone

from .journal import Claimed

KEEP = timedelta(days=1)  # far beyond any claim timeout: only a retried ACK needs it
PRUNE_EVERY = 3600.0  # seconds, per process
_pruned_at = 0.0


def _key(epoch: bytes, row: str) -> str:
    return hashlib.blake2b(
        epoch + b"\0" + row.encode("utf-8", "surrogateescape"), digest_size=16
    ).hexdigest()


def already_landed(using: str, epoch: bytes, items: list[Claimed]) -> set[str]:
    """The rows among `items` whose claimed version (or a later one) has landed."""
    from ..models import LandedIncrement

    keys = {_key(epoch, item.row): item for item in items}
    found = LandedIncrement.objects.using(using).filter(key__in=list(keys))
    landed = dict(found.values_list("key", "version"))
    return {item.row for key, item in keys.items() if landed.get(key, -1) >= int(item.version)}


def record(using: str, epoch: bytes, items: list[Claimed]) -> None:
    """Note these versions as landed (inside the drain's transaction)."""
    from ..models import LandedIncrement

    if not items:
        return
    now = timezone.now()
    objs = [LandedIncrement(_key(epoch, i.row), int(i.version), now) for i in items]
    LandedIncrement.objects.using(using).bulk_create(
        objs, update_conflicts=True, unique_fields=["key"], update_fields=["version", "landed_at"]
    )
    _prune(using, now)


def _prune(using: str, now: Any) -> None:
    global _pruned_at
    if time.monotonic() - _pruned_at < PRUNE_EVERY:
        return
    from ..models import LandedIncrement

    _pruned_at = time.monotonic()
    LandedIncrement.objects.using(using).filter(landed_at__lt=now - KEEP).delete()
