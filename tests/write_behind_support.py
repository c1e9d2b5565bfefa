"""Shared helpers for the write-behind tests (the journal_prefix fixture is in conftest)."""

from __future__ import annotations


def configure(settings, **values):
    """Change some WRITE_BEHIND settings of the test's journal."""
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "WRITE_BEHIND": {**settings.TIERCACHE["WRITE_BEHIND"], **values},
    }
