"""Signals django_tiercache sends."""

from django.dispatch import Signal

# Sent after model-driven invalidation has reached the cache (after the commit
# when the change was made in a transaction). Arguments: sender (the model),
# tags (frozenset of str), cache_alias (str).
tags_invalidated = Signal()
