"""TierCache keeps every promise of Django's cache API.

The behaviours follow what Django's own backend tests check, run against an
in-process partition, one Redis and four Redis partitions (the ``any_cache``
fixture). Sleeps are short and only where expiry itself is the behaviour.
"""

from __future__ import annotations

import datetime
import functools
import pickle
import threading
import time
import warnings
import zlib
from decimal import Decimal

import pytest
import redis
from asgiref.sync import async_to_sync
from django.core import signals
from django.core.cache import CacheKeyWarning, cache, caches
from django.test import override_settings

from tests.redis_servers import SHARED_REDIS_URL, TEST_ENGINE

MISSING = object()
THIRTY_DAYS = 60 * 60 * 24 * 30


def custom_key_func(key, key_prefix, version):
    """A KEY_FUNCTION that shapes keys differently from Django's default."""
    return f"custom|{key_prefix}|v{version}|{key}"


@functools.cache
def raw_shared_redis():
    """A plain redis-py client on the shared database, to look behind the backend."""
    return redis.Redis.from_url(SHARED_REDIS_URL)


def run(coroutine_function, *args, **kwargs):
    """Run an async cache method (or scenario) from a sync test."""
    return async_to_sync(coroutine_function)(*args, **kwargs)


# --- get / set / add / delete -------------------------------------------------


def test_set__then_get_returns_the_value(any_cache):
    any_cache.set("key", "value")
    assert any_cache.get("key") == "value"


def test_get__missing_key_returns_none_or_the_default(any_cache):
    assert any_cache.get("does-not-exist") is None
    assert any_cache.get("does-not-exist", "fallback") == "fallback"
    assert any_cache.get("does-not-exist", default=MISSING) is MISSING


def test_get__stored_none_wins_over_the_default(any_cache):
    any_cache.set("nothing", None)
    assert any_cache.get("nothing", MISSING) is None
    assert any_cache.get("nothing", default="fallback") is None


def test_set__overwrites_an_existing_value(any_cache):
    any_cache.set("key", "first")
    any_cache.set("key", "second")
    assert any_cache.get("key") == "second"


def test_add__stores_only_when_the_key_is_absent(any_cache):
    assert any_cache.add("key", "first") is True
    assert any_cache.add("key", "second") is False
    assert any_cache.get("key") == "first"


def test_add__over_a_stored_none_does_not_overwrite(any_cache):
    any_cache.set("key", None)
    assert any_cache.add("key", "value") is False
    assert any_cache.get("key", MISSING) is None


def test_delete__returns_whether_a_key_was_removed(any_cache):
    any_cache.set_many({"key1": "spam", "key2": "eggs"})
    assert any_cache.delete("key1") is True
    assert any_cache.get("key1", MISSING) is MISSING
    assert any_cache.get("key2") == "eggs"
    assert any_cache.delete("key1") is False
    assert any_cache.delete("never-set") is False


def test_has_key__and_in_see_stored_keys_including_none_values(any_cache):
    any_cache.set("present", "value")
    any_cache.set("forever", "value", None)
    any_cache.set("null", None)
    assert any_cache.has_key("present") is True
    assert any_cache.has_key("forever") is True
    assert any_cache.has_key("null") is True
    assert any_cache.has_key("absent") is False
    assert "present" in any_cache
    assert "null" in any_cache
    assert "absent" not in any_cache


def test_get__returns_a_copy_not_the_stored_object(any_cache):
    value = {"items": [1, 2]}
    any_cache.set("key", value)
    value["items"].append(3)
    fetched = any_cache.get("key")
    assert fetched == {"items": [1, 2]}
    fetched["items"].append(4)
    assert any_cache.get("key") == {"items": [1, 2]}


# --- many-key operations ------------------------------------------------------


def test_get_many__returns_only_the_keys_found(any_cache):
    any_cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
    assert any_cache.get_many(["a", "c", "d"]) == {"a": "a", "c": "c", "d": "d"}
    assert any_cache.get_many(["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert any_cache.get_many(key for key in ["a", "b", "e"]) == {"a": "a", "b": "b"}
    assert any_cache.get_many([]) == {}


def test_get_many__includes_keys_whose_value_is_none(any_cache):
    any_cache.set_many({"x": None, "y": 1})
    assert any_cache.get_many(["x", "y", "z"]) == {"x": None, "y": 1}


def test_set_many__stores_every_pair_and_returns_an_empty_list(any_cache):
    assert any_cache.set_many({"key1": "spam", "key2": "eggs"}) == []
    assert any_cache.get("key1") == "spam"
    assert any_cache.get("key2") == "eggs"


def test_set_many__with_no_data_returns_an_empty_list(any_cache):
    assert any_cache.set_many({}) == []


def test_delete_many__removes_only_the_given_keys(any_cache):
    any_cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
    any_cache.delete_many(["key1", "key2", "never-set"])
    assert any_cache.get_many(["key1", "key2", "key3"]) == {"key3": "ham"}


def test_delete_many__with_no_keys_changes_nothing(any_cache):
    any_cache.set("key", "value")
    any_cache.delete_many([])
    assert any_cache.get("key") == "value"


def test_many_ops__cover_keys_on_every_partition(make_cache, clean_redis_servers):
    cache = make_cache([server.url for server in clean_redis_servers])
    data = {f"key-{i}": i * 10 for i in range(40)}
    assert {cache.partition_for(key) for key in data} == {s.url for s in clean_redis_servers}

    assert cache.set_many(data) == []
    for server in clean_redis_servers:
        assert server.client().dbsize() > 0, f"nothing was written to {server.url}"
    assert cache.get_many(list(data)) == data

    cache.delete_many(list(data)[:20])
    assert cache.get_many(list(data)) == dict(list(data.items())[20:])


def test_clear__empties_the_cache(any_cache):
    data = {f"key-{i}": i for i in range(20)}
    any_cache.set_many(data)
    any_cache.clear()
    assert any_cache.get_many(list(data)) == {}
    any_cache.set("after-clear", 1)
    assert any_cache.get("after-clear") == 1


# --- incr / decr --------------------------------------------------------------


def test_incr__adds_delta_and_returns_the_new_value(any_cache):
    any_cache.set("answer", 41)
    assert any_cache.incr("answer") == 42
    assert any_cache.get("answer") == 42
    assert any_cache.incr("answer", 10) == 52
    assert any_cache.get("answer") == 52
    assert any_cache.incr("answer", -10) == 42
    assert any_cache.get("answer") == 42


def test_decr__subtracts_delta_and_returns_the_new_value(any_cache):
    any_cache.set("answer", 43)
    assert any_cache.decr("answer") == 42
    assert any_cache.decr("answer", 10) == 32
    assert any_cache.decr("answer", -10) == 42
    assert any_cache.get("answer") == 42


def test_incr__from_zero(any_cache):
    any_cache.set("counter", 0)
    assert any_cache.incr("counter") == 1
    assert any_cache.get("counter") == 1


def test_decr__goes_below_zero(any_cache):
    any_cache.set("counter", 1)
    assert any_cache.decr("counter", 5) == -4
    assert any_cache.get("counter") == -4


def test_incr__with_a_big_delta(any_cache):
    any_cache.set("counter", 1)
    assert any_cache.incr("counter", 10**12) == 10**12 + 1
    assert any_cache.decr("counter", 2 * 10**12) == 1 - 10**12
    assert any_cache.get("counter") == 1 - 10**12


def test_incr__past_64_bits_keeps_python_int_arithmetic(any_cache):
    any_cache.set("counter", 2**63 - 1)
    assert any_cache.incr("counter") == 2**63
    assert any_cache.get("counter") == 2**63
    assert any_cache.incr("counter", 2**70) == 2**63 + 2**70
    assert any_cache.decr("counter", 2**63 + 2**70) == 0
    assert any_cache.get("counter") == 0


@pytest.mark.parametrize("operation", ["incr", "decr"])
def test_incr_decr__missing_key_raises_value_error(any_cache, operation):
    with pytest.raises(ValueError):
        getattr(any_cache, operation)("does-not-exist")
    with pytest.raises(ValueError):
        getattr(any_cache, operation)("does-not-exist", -1)
    assert any_cache.has_key("does-not-exist") is False


@pytest.mark.parametrize("value", ["text", None, [1]], ids=["str", "none", "list"])
def test_incr__non_numeric_value_raises_and_keeps_the_value(any_cache, value):
    any_cache.set("key", value)
    with pytest.raises(TypeError):
        any_cache.incr("key")
    assert any_cache.get("key", MISSING) == value


# --- touch --------------------------------------------------------------------


def test_touch__returns_whether_the_key_exists(any_cache):
    any_cache.set("key", "value")
    assert any_cache.touch("key", 60) is True
    assert any_cache.touch("key") is True
    assert any_cache.touch("never-set") is False
    assert any_cache.touch("never-set", 60) is False
    assert any_cache.get("key") == "value"


def test_touch__with_timeout_zero_deletes_the_key(any_cache):
    any_cache.set("key", "value", timeout=60)
    assert any_cache.touch("key", timeout=0) is True
    assert any_cache.get("key", MISSING) is MISSING


def test_touch__changes_the_expiry(any_location, make_cache):
    cache = make_cache(any_location, TIMEOUT=1)
    cache.set("extended", "value", timeout=1)
    cache.set("shortened", "value", timeout=60)
    cache.set("to-default", "value", timeout=60)
    cache.set("persisted", "value", timeout=1)
    assert cache.touch("extended", timeout=60) is True
    assert cache.touch("shortened", timeout=1) is True
    assert cache.touch("to-default") is True  # TIMEOUT is 1 second
    assert cache.touch("persisted", timeout=None) is True
    time.sleep(1.2)
    assert cache.get("extended") == "value"
    assert cache.get("persisted") == "value"
    assert cache.has_key("shortened") is False
    assert cache.has_key("to-default") is False


# --- get_or_set ---------------------------------------------------------------


def test_get_or_set__stores_the_default_once(any_cache):
    assert any_cache.get("projector") is None
    assert any_cache.get_or_set("projector", 42) == 42
    assert any_cache.get("projector") == 42
    assert any_cache.get_or_set("projector", 7) == 42


def test_get_or_set__calls_a_callable_default_only_on_a_miss(any_cache):
    calls = []

    def compute():
        calls.append(1)
        return "computed"

    assert any_cache.get_or_set("key", compute) == "computed"
    assert any_cache.get_or_set("key", compute) == "computed"
    assert len(calls) == 1
    assert any_cache.get("key") == "computed"


def test_get_or_set__none_default_is_returned_and_stored(any_cache):
    assert any_cache.get_or_set("null", None) is None
    assert any_cache.get("null", MISSING) is None
    assert any_cache.get_or_set("null-callable", lambda: None) is None
    assert any_cache.get("null-callable", MISSING) is None


def test_get_or_set__respects_version(any_cache):
    assert any_cache.get_or_set("brian", 1979, version=2) == 1979
    assert any_cache.get("brian", MISSING, version=1) is MISSING
    assert any_cache.get_or_set("brian", 42, version=1) == 42
    assert any_cache.get_or_set("brian", 0, version=2) == 1979
    assert any_cache.get("brian", MISSING, version=3) is MISSING


def test_get_or_set__requires_a_default(any_cache):
    with pytest.raises(TypeError):
        any_cache.get_or_set("brian")
    with pytest.raises(TypeError):
        any_cache.get_or_set("brian", version=1)
    assert any_cache.has_key("brian") is False


# --- data types ---------------------------------------------------------------


def module_function():
    return 42


class ModuleClass:
    def method(self):
        return 24


DATA_TYPES = {
    "str": "this is a string",
    "empty-str": "",
    "bytes": b"\x00\x01binary\xff",
    "empty-bytes": b"",
    "unicode": "Iñtërnâtiônàlizætiøn ☃ 🐍",
    "int": 42,
    "negative-int": -7,
    "zero": 0,
    "huge-int": 2**100,
    "float": 3.25,
    "true": True,
    "false": False,
    "list": [1, "two", 3.0],
    "tuple": (1, 2, 3, 4),
    "set": {1, 2, 3},
    "dict": {"A": 1, "B": [2, 3]},
    "nested": {"a": [{"b": (1, None)}]},
    "aware-datetime": datetime.datetime(2024, 5, 17, 12, 30, tzinfo=datetime.timezone.utc),
    "date": datetime.date(2024, 2, 29),
    "decimal": Decimal("12.3400"),
    "digit-string": "42",
    "digit-bytes": b"42",
    "function": module_function,
    "class": ModuleClass,
}


@pytest.mark.parametrize("value", list(DATA_TYPES.values()), ids=list(DATA_TYPES))
def test_data_types__round_trip_with_their_type(any_cache, value):
    any_cache.set("key", value)
    fetched = any_cache.get("key", MISSING)
    assert fetched == value
    assert type(fetched) is type(value)


def test_data_types__round_trip_through_set_many_and_add(any_cache):
    any_cache.set_many(DATA_TYPES)
    assert any_cache.get_many(list(DATA_TYPES)) == DATA_TYPES
    for name, value in DATA_TYPES.items():
        assert any_cache.add(f"added-{name}", value) is True
        assert any_cache.get(f"added-{name}", MISSING) == value


def test_unicode__keys_and_values_work_with_every_method(any_cache):
    stuff = {
        "ascii": "ascii_value",
        "unicode_ascii": "Iñtërnâtiônàlizætiøn1",
        "Iñtërnâtiônàlizætiøn": "Iñtërnâtiônàlizætiøn2",
        "снег-☃": {"x": 1},
    }
    for key, value in stuff.items():
        any_cache.set(key, value)
        assert any_cache.get(key) == value
    for key, value in stuff.items():
        assert any_cache.delete(key) is True
        assert any_cache.add(key, value) is True
        assert any_cache.get(key) == value
    any_cache.delete_many(list(stuff))
    assert any_cache.get_many(list(stuff)) == {}
    any_cache.set_many(stuff)
    assert any_cache.get_many(list(stuff)) == stuff


def test_binary_string__compressed_bytes_round_trip(any_cache):
    compressed = zlib.compress(b"value_to_be_compressed" * 10)
    any_cache.set("binary-set", compressed)
    assert any_cache.add("binary-add", compressed) is True
    any_cache.set_many({"binary-set-many": compressed})
    for key in ("binary-set", "binary-add", "binary-set-many"):
        fetched = any_cache.get(key)
        assert fetched == compressed
        assert zlib.decompress(fetched) == b"value_to_be_compressed" * 10


def test_large_values__of_about_a_megabyte_round_trip(any_cache):
    blob = bytes(range(256)) * 4096  # 1 MiB
    text = "ß" * (1 << 19)  # 1 MiB once encoded
    any_cache.set("blob", blob)
    any_cache.set_many({"text": text, "list": [blob, text]})
    assert any_cache.get("blob") == blob
    assert any_cache.get_many(["text", "list"]) == {"text": text, "list": [blob, text]}


def test_model_instance__unsaved_round_trips(any_cache):
    from django.contrib.auth.models import User

    user = User(username="ada", first_name="Ada", email="ada@example.com")
    any_cache.set("user", user)
    fetched = any_cache.get("user")
    assert isinstance(fetched, User)
    assert fetched.pk is None
    assert (fetched.username, fetched.first_name, fetched.email) == (
        "ada",
        "Ada",
        "ada@example.com",
    )


@pytest.mark.django_db
def test_model_instance__saved_round_trips_without_a_query(any_cache, django_assert_num_queries):
    from django.contrib.auth.models import User

    user = User.objects.create_user("grace", "grace@example.com", "secret")
    any_cache.set("user", user)
    with django_assert_num_queries(0):
        fetched = any_cache.get("user")
    assert fetched == user
    assert fetched.username == "grace"
    assert fetched.date_joined == user.date_joined
    assert fetched.check_password("secret")


@pytest.mark.django_db
def test_queryset__deferred_round_trips(any_cache):
    from django.contrib.auth.models import User

    User.objects.create_user("linus")
    any_cache.set("users", User.objects.defer("email"))
    fetched = any_cache.get("users")
    assert [user.username for user in fetched] == ["linus"]


# --- unpicklable values -------------------------------------------------------


class RefusesPickling:
    def __getstate__(self):
        raise pickle.PickleError("no")


def _local_function():
    def inner():
        return 1

    return inner


UNPICKLABLE = {
    "getstate-raises": RefusesPickling,
    "lock": threading.Lock,
    "generator": lambda: (i for i in range(3)),
    "local-function": _local_function,
}


@pytest.fixture(params=list(UNPICKLABLE), ids=list(UNPICKLABLE))
def unpicklable(request):
    return UNPICKLABLE[request.param]()


def test_set__unpicklable_value_raises_and_stores_nothing(any_cache, unpicklable):
    any_cache.set("existing", "old")
    with pytest.raises(pickle.PicklingError):
        any_cache.set("unpicklable", unpicklable)
    with pytest.raises(pickle.PicklingError):
        any_cache.set("existing", unpicklable)
    assert any_cache.has_key("unpicklable") is False
    assert any_cache.get("existing") == "old"


def test_add__unpicklable_value_raises_and_stores_nothing(any_cache, unpicklable):
    with pytest.raises(pickle.PicklingError):
        any_cache.add("unpicklable", unpicklable)
    assert any_cache.has_key("unpicklable") is False


def test_get_or_set__unpicklable_default_raises_and_stores_nothing(any_cache, unpicklable):
    with pytest.raises(pickle.PicklingError):
        any_cache.get_or_set("unpicklable", lambda: unpicklable)
    assert any_cache.has_key("unpicklable") is False


def test_set_many__one_unpicklable_value_stores_none_of_them(any_cache, unpicklable):
    data = {f"good-{i}": i for i in range(10)}
    data["bad"] = unpicklable
    data.update({f"fine-{i}": str(i) for i in range(10)})
    with pytest.raises(pickle.PicklingError):
        any_cache.set_many(data)
    assert any_cache.get_many(list(data)) == {}


# --- timeouts -----------------------------------------------------------------


def test_timeout__values_expire(any_cache):
    any_cache.set("expire1", "very quickly", 1)
    any_cache.set("expire2", "very quickly", 1)
    any_cache.set_many({"expire3": "quickly", "expire4": "quickly"}, 1)
    assert any_cache.add("expire5", "quickly", 1) is True
    assert any_cache.get("expire1") == "very quickly"
    time.sleep(1.2)
    assert any_cache.get("expire1", MISSING) is MISSING
    assert any_cache.get_many(["expire3", "expire4", "expire5"]) == {}
    assert any_cache.add("expire2", "newvalue") is True
    assert any_cache.get("expire2") == "newvalue"
    assert any_cache.has_key("expire5") is False


def test_timeout__none_never_expires_and_default_comes_from_params(any_location, make_cache):
    cache = make_cache(any_location, TIMEOUT=1)
    cache.set("forever-set", "eggs", None)
    assert cache.add("forever-add", "ham", None) is True
    assert cache.add("forever-set", "new eggs", None) is False
    cache.set_many({"forever-many": "sausage"}, None)
    cache.set("default", "expires with TIMEOUT")
    cache.set_many({"default-many": "expires with TIMEOUT"})
    if any_location == SHARED_REDIS_URL:
        raw = raw_shared_redis()
        for key in ("forever-set", "forever-add", "forever-many"):
            assert raw.pttl(cache.make_key(key)) == -1, key
        for key in ("default", "default-many"):
            assert 0 < raw.pttl(cache.make_key(key)) <= 1000, key
    time.sleep(1.2)
    assert cache.get_many(["forever-set", "forever-add", "forever-many"]) == {
        "forever-set": "eggs",
        "forever-add": "ham",
        "forever-many": "sausage",
    }
    assert cache.get_many(["default", "default-many"]) == {}


def test_timeout__none_in_params_makes_the_default_forever(shared_redis_url, make_cache):
    cache = make_cache(shared_redis_url, TIMEOUT=None)
    cache.set("key", "value")
    cache.set_many({"many": "value"})
    raw = raw_shared_redis()
    assert raw.pttl(cache.make_key("key")) == -1
    assert raw.pttl(cache.make_key("many")) == -1
    assert cache.get_many(["key", "many"]) == {"key": "value", "many": "value"}


@pytest.mark.parametrize("timeout", [0, -1, -100])
def test_timeout__zero_or_negative_stores_nothing(any_cache, timeout):
    any_cache.set("existing", "old")
    any_cache.set("existing", "new", timeout)
    assert any_cache.get("existing", MISSING) is MISSING

    any_cache.set("key1", "eggs", timeout)
    assert any_cache.get("key1", MISSING) is MISSING
    assert any_cache.add("key2", "ham", timeout) is True
    assert any_cache.get("key2", MISSING) is MISSING
    assert any_cache.set_many({"key3": "sausage", "key4": "bisque"}, timeout) == []
    assert any_cache.get_many(["key3", "key4"]) == {}


def test_timeout__float_seconds_are_honoured(any_cache):
    any_cache.set("long", "spam", 100.2)
    any_cache.set("short", "spam", 0.4)
    assert any_cache.add("short-add", "spam", 0.4) is True
    assert any_cache.get_many(["long", "short", "short-add"]) == {
        "long": "spam",
        "short": "spam",
        "short-add": "spam",
    }
    time.sleep(0.6)
    assert any_cache.get_many(["long", "short", "short-add"]) == {"long": "spam"}


def test_timeout__longer_than_thirty_days_is_relative(any_cache):
    any_cache.set("key1", "eggs", THIRTY_DAYS + 1)
    assert any_cache.add("key2", "ham", THIRTY_DAYS + 1) is True
    any_cache.set_many({"key3": "sausage"}, THIRTY_DAYS + 1)
    assert any_cache.get_many(["key1", "key2", "key3"]) == {
        "key1": "eggs",
        "key2": "ham",
        "key3": "sausage",
    }
    assert any_cache.touch("key1", THIRTY_DAYS * 12) is True
    assert any_cache.get("key1") == "eggs"


# --- key prefix, versions, key functions --------------------------------------


def test_key_prefix__isolates_caches_on_the_same_location(any_location, make_cache):
    first = make_cache(any_location, KEY_PREFIX="first")
    same = make_cache(any_location, KEY_PREFIX="first")
    other = make_cache(any_location, KEY_PREFIX="other")
    first.set("somekey", "value")
    assert same.get("somekey") == "value"  # the location really is shared
    assert other.has_key("somekey") is False
    other.set("somekey", "value2")
    assert first.get("somekey") == "value"
    assert other.get("somekey") == "value2"
    assert other.delete("somekey") is True
    assert first.get("somekey") == "value"


def test_version__set_and_get_use_the_cache_version_by_default(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)

    v1.set("answer1", 42)
    assert v1.get("answer1") == 42
    assert v1.get("answer1", version=1) == 42
    assert v1.get("answer1", version=2) is None
    assert v2.get("answer1") is None
    assert v2.get("answer1", version=1) == 42

    v1.set("answer2", 42, version=2)
    assert v1.get("answer2") is None
    assert v2.get("answer2") == 42

    v2.set("answer3", 42)
    assert v1.get("answer3") is None
    assert v1.get("answer3", version=2) == 42

    v2.set("answer4", 42, version=1)
    assert v1.get("answer4") == 42
    assert v2.get("answer4") is None


def test_version__add(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)
    assert v1.add("answer", 42, version=2) is True
    assert v1.add("answer", 37, version=2) is False
    assert v1.get("answer", version=1) is None
    assert v1.add("answer", 37, version=1) is True
    assert v1.get("answer") == 37
    assert v2.get("answer") == 42
    assert v2.add("answer", 0) is False
    assert v2.add("answer", 0, version=1) is False


def test_version__has_key_and_delete(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)
    v1.set("answer", 37, version=1)
    v1.set("answer", 42, version=2)
    assert v1.has_key("answer") is True
    assert v2.has_key("answer", version=1) is True
    assert v1.has_key("answer", version=3) is False

    assert v2.delete("answer") is True
    assert v1.get("answer") == 37
    assert v1.get("answer", version=2) is None
    assert v2.delete("answer", version=1) is True
    assert v1.get("answer") is None


def test_version__incr_decr(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)
    v1.set("answer", 37, version=1)
    v1.set("answer", 42, version=2)
    assert v1.incr("answer") == 38
    assert v1.incr("answer", version=2) == 43
    assert v2.decr("answer") == 42
    assert v2.decr("answer", version=1) == 37
    assert v1.get("answer") == 37
    assert v2.get("answer") == 42
    with pytest.raises(ValueError):
        v1.incr("answer", version=3)


def test_version__get_set_delete_many(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)
    v1.set_many({"ford": 37, "arthur": 42})
    v1.set_many({"ford": 1, "arthur": 2}, version=2)
    assert v1.get_many(["ford", "arthur"]) == {"ford": 37, "arthur": 42}
    assert v2.get_many(["ford", "arthur"]) == {"ford": 1, "arthur": 2}
    assert v2.get_many(["ford", "arthur"], version=1) == {"ford": 37, "arthur": 42}
    assert v1.get_many(["ford", "arthur"], version=3) == {}

    v2.delete_many(["ford"])
    assert v1.get_many(["ford"], version=2) == {}
    assert v1.get("ford") == 37
    v2.delete_many(["arthur"], version=1)
    assert v1.get_many(["ford", "arthur"]) == {"ford": 37}
    assert v2.get("arthur") == 2


def test_version__touch(any_location, make_cache):
    v1 = make_cache(any_location)
    v1.set("answer", 42, version=2)
    assert v1.touch("answer", 60) is False
    assert v1.touch("answer", 60, version=2) is True
    assert v1.touch("answer", 0, version=2) is True
    assert v1.get("answer", version=2) is None


def test_incr_version__moves_the_value_to_the_next_version(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)
    v1.set("answer", 42, version=2)
    assert v1.incr_version("answer", version=2) == 3
    assert v1.get("answer", version=2) is None
    assert v1.get("answer", version=3) == 42

    v2.set("answer2", 42)
    assert v2.incr_version("answer2") == 3
    assert v2.get("answer2") is None
    assert v2.get("answer2", version=3) == 42

    assert v1.incr_version("answer", delta=5, version=3) == 8
    assert v1.get("answer", version=8) == 42

    v1.set("null", None)
    assert v1.incr_version("null") == 2
    assert v1.get("null", MISSING, version=2) is None
    assert v1.get("null", MISSING) is MISSING


def test_decr_version__moves_the_value_to_the_previous_version(any_location, make_cache):
    v1 = make_cache(any_location)
    v2 = make_cache(any_location, VERSION=2)
    v1.set("answer", 42, version=2)
    assert v1.decr_version("answer", version=2) == 1
    assert v1.get("answer") == 42
    assert v1.get("answer", version=2) is None

    v2.set("answer2", 42)
    assert v2.decr_version("answer2") == 1
    assert v2.get("answer2") is None
    assert v2.get("answer2", version=1) == 42


@pytest.mark.parametrize("operation", ["incr_version", "decr_version"])
def test_incr_decr_version__missing_key_raises_value_error(any_cache, operation):
    with pytest.raises(ValueError):
        getattr(any_cache, operation)("does-not-exist")
    with pytest.raises(ValueError):
        getattr(any_cache, operation)("does-not-exist", version=2)


def test_incr_version__moves_a_key_across_partitions(make_cache, clean_redis_servers):
    cache = make_cache([server.url for server in clean_redis_servers])
    key = next(
        (
            f"mover-{i}"
            for i in range(200)
            if cache.partition_for(f"mover-{i}", version=1)
            != cache.partition_for(f"mover-{i}", version=2)
        ),
        None,
    )
    if key is None:
        pytest.skip("partition_for() ignores the version: no key changes partition")
    cache.set(key, "moved")
    assert cache.incr_version(key) == 2
    assert cache.get(key, MISSING) is MISSING
    assert cache.get(key, version=2) == "moved"
    assert cache.decr_version(key, version=2) == 1
    assert cache.get(key) == "moved"


@pytest.mark.parametrize(
    "key_function",
    [custom_key_func, "tests.test_django_api.custom_key_func"],
    ids=["callable", "dotted-path"],
)
def test_key_function__shapes_the_keys_and_isolates_caches(any_location, make_cache, key_function):
    default = make_cache(any_location)
    custom = make_cache(any_location, KEY_FUNCTION=key_function)
    assert custom.make_key("answer") == custom_key_func("answer", custom.key_prefix, 1)

    default.set("answer1", 42)
    assert custom.get("answer1") is None
    custom.set("answer2", 43)
    assert default.get("answer2") is None
    assert custom.get("answer2") == 43
    assert make_cache(any_location, KEY_FUNCTION=custom_key_func).get("answer2") == 43
    if any_location == SHARED_REDIS_URL:
        assert raw_shared_redis().exists(custom.make_key("answer2")) == 1


# --- key warnings -------------------------------------------------------------


def _key_operations(key):
    return [
        ("get", (key,)),
        ("set", (key, 1)),
        ("add", (key, 1)),
        ("has_key", (key,)),
        ("incr", (key,)),
        ("decr", (key,)),
        ("touch", (key,)),
        ("get_or_set", (key, 1)),
        ("delete", (key,)),
        ("get_many", ([key, "b"],)),
        ("set_many", ({key: 1, "b": 2},)),
        ("delete_many", ([key, "b"],)),
    ]


def _assert_every_operation_warns(cache, key, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        cache.set(key, 1)  # so that incr/decr find a value
    for operation, args in _key_operations(key):
        with pytest.warns(CacheKeyWarning, match=match):
            getattr(cache, operation)(*args)


@pytest.mark.parametrize(
    "key",
    ["key with spaces", "key\twith\ttabs", "key\nwith\nnewline", "bell\x07", "del\x7f"],
    ids=["space", "tab", "newline", "control", "del"],
)
def test_key_warnings__memcached_unsafe_characters_warn(any_cache, key):
    _assert_every_operation_warns(any_cache, key, "characters that will cause errors")


def test_key_warnings__key_longer_than_250_characters_warns(any_cache):
    made_length = len(any_cache.make_key(""))
    key = "a" * (251 - made_length)
    assert len(any_cache.make_key(key)) == 251
    _assert_every_operation_warns(any_cache, key, "longer than 250")


def test_key_warnings__250_character_key_is_fine(any_cache):
    key = "a" * (250 - len(any_cache.make_key("")))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        for operation, args in _key_operations(key):
            getattr(any_cache, operation)(*args)


def test_key_warnings__unsafe_keys_still_work(any_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheKeyWarning)
        any_cache.set("key with spaces", "value")
        assert any_cache.get("key with spaces") == "value"
        assert any_cache.get("key_with_spaces", MISSING) is MISSING


# --- close --------------------------------------------------------------------


def test_close__the_cache_keeps_working_afterwards(any_cache):
    any_cache.set("before", 1)
    any_cache.close()
    any_cache.close()  # twice is harmless
    assert any_cache.get("before") == 1
    any_cache.set("after", 2)
    assert any_cache.get_many(["before", "after"]) == {"before": 1, "after": 2}


@pytest.mark.django_db  # request_finished also closes database connections
def test_close__on_request_finished_keeps_the_default_cache_working():
    key = "request-finished-probe"
    cache.set(key, "value")
    try:
        signals.request_finished.send(sender=None)
        assert cache.get(key) == "value"
    finally:
        cache.delete(key)


# --- async API ----------------------------------------------------------------


def test_async__set_get_add_delete(any_cache):
    async def scenario():
        assert await any_cache.aset("key", "value") is None
        assert await any_cache.aget("key") == "value"
        assert await any_cache.aget("missing", "fallback") == "fallback"
        assert await any_cache.aadd("key", "other") is False
        assert await any_cache.aadd("new", "added") is True
        assert await any_cache.ahas_key("new") is True
        assert await any_cache.adelete("key") is True
        assert await any_cache.adelete("key") is False
        assert await any_cache.ahas_key("key") is False

    run(scenario)
    assert any_cache.get("new") == "added"


def test_async__many_key_operations(any_cache):
    async def scenario():
        assert await any_cache.aset_many({"a": 1, "b": None, "c": 3}) == []
        assert await any_cache.aget_many(["a", "b", "c", "d"]) == {"a": 1, "b": None, "c": 3}
        await any_cache.adelete_many(["a", "c"])
        assert await any_cache.aget_many(["a", "b", "c"]) == {"b": None}
        await any_cache.aset("x", 1)
        await any_cache.aclear()
        assert await any_cache.aget_many(["b", "x"]) == {}

    run(scenario)


def test_async__incr_decr_touch(any_cache):
    async def scenario():
        await any_cache.aset("n", 10)
        assert await any_cache.aincr("n") == 11
        assert await any_cache.aincr("n", 9) == 20
        assert await any_cache.adecr("n", 25) == -5
        with pytest.raises(ValueError):
            await any_cache.aincr("missing")
        with pytest.raises(ValueError):
            await any_cache.adecr("missing")
        assert await any_cache.atouch("n", 60) is True
        assert await any_cache.atouch("missing", 60) is False
        assert await any_cache.atouch("n", 0) is True

    run(scenario)
    assert any_cache.get("n", MISSING) is MISSING


def test_async__get_or_set_and_versions(any_cache):
    calls = []

    def compute():
        calls.append(1)
        return "computed"

    async def scenario():
        assert await any_cache.aget_or_set("key", compute) == "computed"
        assert await any_cache.aget_or_set("key", compute) == "computed"
        assert await any_cache.aget_or_set("none", None) is None
        assert await any_cache.aget("none", MISSING) is None
        assert await any_cache.aincr_version("key") == 2
        assert await any_cache.aget("key", version=2) == "computed"
        assert await any_cache.adecr_version("key", version=2) == 1
        with pytest.raises(ValueError):
            await any_cache.aincr_version("missing")
        await any_cache.aclose()

    run(scenario)
    assert len(calls) == 1
    assert any_cache.get("key") == "computed"


def test_async__write_methods_accept_tags(any_cache):
    async def scenario():
        await any_cache.aset("set", 1, tags=("shop",))
        assert await any_cache.aadd("add", 2, tags=["shop"]) is True
        assert await any_cache.aset_many({"many": 3}, tags=("shop",)) == []
        assert await any_cache.aget_or_set("got", lambda: 4, tags=("shop",)) == 4
        await any_cache.aset("untagged", 5)

    run(scenario)
    keys = ["set", "add", "many", "got", "untagged"]
    assert any_cache.get_many(keys) == {"set": 1, "add": 2, "many": 3, "got": 4, "untagged": 5}
    any_cache.invalidate_tags("shop")
    assert any_cache.get_many(keys) == {"untagged": 5}


def test_async__unpicklable_value_raises(any_cache):
    with pytest.raises(pickle.PicklingError):
        run(any_cache.aset, "key", threading.Lock())
    with pytest.raises(pickle.PicklingError):
        run(any_cache.aset_many, {"good": 1, "bad": threading.Lock()})
    assert any_cache.get_many(["key", "good", "bad"]) == {}


def test_async__key_warnings(any_cache):
    with pytest.warns(CacheKeyWarning):
        run(any_cache.aset, "key with spaces", 1)
    with pytest.warns(CacheKeyWarning):
        run(any_cache.aget, "key with spaces")


# --- Django wiring ------------------------------------------------------------


def test_django_caches__default_alias_is_a_tiercache():
    from django_tiercache.backend import TierCache

    assert isinstance(caches["default"], TierCache)
    assert cache.key_prefix == "tiercache-tests"
    key = "wiring-probe"
    try:
        cache.set(key, {"via": "django.core.cache"})
        assert caches["default"].get(key) == {"via": "django.core.cache"}
        made = cache.make_key(key)
        if TEST_ENGINE:  # the default cache is on a cluster or a Sentinel primary
            store = cache._partition(made).store
            client, made = store.client, getattr(store, "key_prefix", "") + made
        else:
            client = raw_shared_redis()
        assert client.exists(made) == 1
    finally:
        cache.delete(key)


def test_django_caches__params_from_settings_reach_the_backend():
    from django_tiercache.backend import TierCache

    setting = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": "memory://wiring",
            "KEY_PREFIX": "wired",
            "VERSION": 3,
            "TIMEOUT": 60,
            "KEY_FUNCTION": "tests.test_django_api.custom_key_func",
        },
    }
    with override_settings(CACHES=setting):
        wired = caches["default"]
        try:
            assert isinstance(wired, TierCache)
            assert (wired.key_prefix, wired.version, wired.default_timeout) == ("wired", 3, 60)
            assert wired.make_key("k") == "custom|wired|v3|k"
            wired.set("k", "v")
            assert cache.get("k") == "v"
        finally:
            wired.clear()
    assert caches["default"].key_prefix == "tiercache-tests"
