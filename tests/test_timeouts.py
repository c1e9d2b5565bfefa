"""Timeouts and tag counts that no partition could honour are refused at the call."""

import math

import pytest

from django_tiercache.storage.tags import MAX_TAGS_PER_ENTRY
from django_tiercache.storage.timeouts import MAX_TIMEOUT

THIRTY_DAYS = 30 * 24 * 3600
BAD_TIMEOUTS = [
    ("300", TypeError),
    (b"300", TypeError),
    ([300], TypeError),
    (1e16, ValueError),
    (MAX_TIMEOUT + 1, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (-1e16, ValueError),
]
BAD_TIMEOUT_IDS = ["str", "bytes", "list", "1e16", "max+1", "nan", "inf", "-inf", "-1e16"]

WRITES = {
    "set": lambda cache, timeout, tags=(): cache.set("k", "new", timeout, tags=tags),
    "add": lambda cache, timeout, tags=(): cache.add("other", "new", timeout, tags=tags),
    "set_many": lambda cache, timeout, tags=(): cache.set_many(
        {"k": "new", "other": "new"}, timeout, tags=tags
    ),
    "get_or_set": lambda cache, timeout, tags=(): cache.get_or_set(
        "other", "new", timeout, tags=tags
    ),
    "set_many_tagged": lambda cache, timeout, tags=(): cache.set_many_tagged(
        {"k": ("new", tags), "other": ("new", tags)}, timeout
    ),
    "get_or_set_many": lambda cache, timeout, tags=(): cache.get_or_set_many(
        {"other": tags}, lambda keys: dict.fromkeys(keys, "new"), timeout
    ),
}


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=BAD_TIMEOUT_IDS)
@pytest.mark.parametrize("operation", [*WRITES, "touch", "get_or_set on a hit"])
def test_a_timeout_no_partition_can_honour__is_refused_at_the_call(
    any_cache, operation, timeout, error
):
    any_cache.set("k", "old")
    with pytest.raises(error, match="timeout"):
        if operation == "touch":
            any_cache.touch("k", timeout)
        elif operation == "get_or_set on a hit":
            any_cache.get_or_set("k", "new", timeout)
        else:
            WRITES[operation](any_cache, timeout)
    assert any_cache.get_many(["k", "other"]) == {"k": "old"}  # nothing written


def test_the_largest_timeouts__are_honoured(any_cache):
    any_cache.set("k", "v", MAX_TIMEOUT)
    assert any_cache.get("k") == "v"
    assert any_cache.touch("k", MAX_TIMEOUT) is True
    assert any_cache.get("k") == "v"
    any_cache.set("k", "v", -MAX_TIMEOUT)  # negative: expires at once, as in Django
    assert any_cache.get("k") is None


@pytest.mark.parametrize(
    "tags",
    [
        [f"t{i}" for i in range(MAX_TAGS_PER_ENTRY + 1)],
        # each "family:member" tag brings its "family:*" along: these are 2 * 51
        [f"f{i}:1" for i in range(MAX_TAGS_PER_ENTRY // 2 + 1)],
        [f"t{i}" for i in range(9000)],  # more than a Redis Function can unpack
    ],
    ids=["max+1", "families", "9000"],
)
@pytest.mark.parametrize("operation", WRITES)
def test_more_tags_than_an_entry_may_carry__are_refused_at_the_call(any_cache, operation, tags):
    any_cache.set("k", "old")
    with pytest.raises(ValueError, match=f"at most {MAX_TAGS_PER_ENTRY} tags"):
        WRITES[operation](any_cache, 60, tags)
    assert any_cache.get_many(["k", "other"]) == {"k": "old"}


def test_as_many_tags_as_an_entry_may_carry__are_stored(any_cache):
    tags = [f"f{i}:1" for i in range(MAX_TAGS_PER_ENTRY // 2)]
    any_cache.set("k", "v", tags=tags)
    assert any_cache.get("k") == "v"
    any_cache.invalidate_tags(tags[-1])
    assert any_cache.get("k") is None


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [(10, 10), (-5, 0), (0, 0), (None, None), (0.5, 0.5), (THIRTY_DAYS, THIRTY_DAYS)],
)
def test_get_backend_timeout__gives_relative_seconds_as_djangos_redis_cache(
    any_cache, timeout, seconds
):
    assert any_cache.get_backend_timeout(timeout) == seconds


def test_get_backend_timeout__default_and_bad_values(any_location, make_cache):
    assert make_cache(any_location, TIMEOUT=120).get_backend_timeout() == 120
    assert make_cache(any_location, TIMEOUT=None).get_backend_timeout() is None
    with pytest.raises(TypeError, match="timeout"):
        make_cache(any_location).get_backend_timeout("300")
