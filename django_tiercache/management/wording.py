"""How the management commands put counts into sentences."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """'1 dead letter', '20,005 entries': a count with its noun in the right number."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"
