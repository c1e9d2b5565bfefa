"""Shared helpers for the write-behind tests: an isolated journal per test."""

from __future__ import annotations

import uuid

import pytest
import redis

from tests.redis_servers import SHARED_REDIS_URL


@pytest.fixture
def journal_prefix(settings):
    """A journal of the test's own (unique key prefix), emptied afterwards."""
    prefix = f"wbt{uuid.uuid4().hex[:8]}"
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "WRITE_BEHIND": {
            "KEY_PREFIX": prefix,
            "TRIGGER": False,
            "RETRY_BACKOFF": 0,
            "MAX_RETRIES": 2,
            "CLAIM_TIMEOUT": 30,
        },
    }
    yield prefix
    client = redis.Redis.from_url(SHARED_REDIS_URL)
    keys = list(client.scan_iter(match="{" + prefix + "}*"))
    if keys:
        client.delete(*keys)


def configure(settings, **values):
    """Change some WRITE_BEHIND settings of the test's journal."""
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "WRITE_BEHIND": {**settings.TIERCACHE["WRITE_BEHIND"], **values},
    }
