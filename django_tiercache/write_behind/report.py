"""Write-behind figures for the admin statistics page, its JSON and Prometheus.

``report()`` is None when no model is registered with ``write_behind=True``
(the page then shows no section); while the journal cannot be read it says so
instead of failing the page.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError

from ..orm.registry import registered_models, registration_for
from .api import stats
from .drain import drain
from .journal import get_journal

DEAD_LETTERS_SHOWN = 20


def in_use() -> bool:
    return any(registration_for(m).write_behind for m in registered_models())


def report() -> dict[str, Any] | None:
    if not in_use():
        return None
    try:
        figures = stats()
        journal = get_journal()
        letters = journal.dead_letters()
        health = journal.health()
    except (RedisError, ImproperlyConfigured) as exc:
        return {"up": False, "error": f"{type(exc).__name__}: {exc}"}
    shown = [
        {
            "row": _shown(row),
            "op": _shown(str(letter["op"])),
            "error": _shown(str(letter["error"])),
            "quarantined": bool(letter.get("quarantined")),
        }
        for row, letter in list(letters.items())[:DEAD_LETTERS_SHOWN]
    ]
    return {"up": True, **figures, "dead_letter_rows": shown, "journal": health}


# -- the page's actions (stats/actions.py offers them when write-behind is in use) --


def _shown(text: str) -> str:
    """Text from the journal as a page can carry it: bytes no codec takes, escaped."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def flush_now() -> str:
    outcome = drain(timeout=30)
    done = f"Write-behind: {_count(outcome.written, 'row')} written, {outcome.failed} failed."
    if outcome.quarantined:
        done += f" {_count(outcome.quarantined, 'row')} quarantined (not written by this site)."
    if outcome.unavailable is not None:
        done += f" The database was unavailable ({outcome.unavailable}); the rest wait."
    return done


def retry_dead_letters() -> str:
    return f"Write-behind: {_count(get_journal().retry_dead(), 'dead letter')} queued again."


def drop_dead_letters() -> str:
    return f"Write-behind: {_count(get_journal().drop_dead(), 'dead letter')} dropped."
