"""Serialization and signing: planted bytes are never unpickled."""

import pickle
import zlib

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django_redis.serializers.pickle import PickleSerializer

from django_tiercache.exceptions import SerializationError

EXPLOITED = []


def _exploit():
    EXPLOITED.append("ran")


class Planted:
    """What an attacker with write access to Redis would plant: unpickling runs code."""

    def __reduce__(self):
        return (_exploit, ())


class RecordingPickleSerializer(PickleSerializer):
    """The pickle serializer, noting every body it is asked to unpickle."""

    loaded: list[bytes] = []

    def loads(self, value):
        self.loaded.append(value)
        return super().loads(value)


RECORDING = f"{__name__}.RecordingPickleSerializer"
ZLIB = "django_redis.compressors.zlib.ZlibCompressor"


@pytest.fixture
def redis_cache(clean_redis_servers, make_cache):
    server = clean_redis_servers[0]
    cache = make_cache(server.url)
    return cache, server.client()


def tampered_count(cache):
    return sum(n for (event, _), n in cache._policy.counts.items() if event == "tampered")


@pytest.mark.parametrize(
    "planted",
    [
        pickle.dumps(Planted()),
        b"u" + pickle.dumps(Planted()),
        b"v" + b"\0" * 16 + pickle.dumps(Planted()),
    ],
)
def test_a_planted_pickle__reads_as_a_miss_and_never_runs(redis_cache, planted, caplog):
    cache, raw = redis_cache
    EXPLOITED.clear()
    raw.set(cache.make_key("victim"), planted)
    assert cache.get("victim", "miss") == "miss"
    assert cache.has_key("victim") is False
    assert EXPLOITED == []
    assert tampered_count(cache) == 2
    assert "not written by this application" in caplog.text


def test_a_flipped_byte__reads_as_a_miss(redis_cache):
    cache, raw = redis_cache
    cache.set("k", {"balance": 100})
    stored = bytearray(raw.get(cache.make_key("k")))
    stored[-3] ^= 1
    raw.set(cache.make_key("k"), bytes(stored))
    assert cache.get("k") is None
    assert tampered_count(cache) == 1


def test_a_signed_entry_copied_to_another_key__reads_as_a_miss(redis_cache):
    cache, raw = redis_cache
    cache.set("admin-flag:alice", True)
    raw.set(cache.make_key("admin-flag:mallory"), raw.get(cache.make_key("admin-flag:alice")))
    assert cache.get("admin-flag:alice") is True
    assert cache.get("admin-flag:mallory") is None


def test_entries_signed_with_a_fallback_secret_still_read(make_cache):
    location = "memory://rotation"
    with override_settings(SECRET_KEY="old-secret"):
        make_cache(location).set("k", "v")
    with override_settings(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"]):
        assert make_cache(location).get("k") == "v"
    with override_settings(SECRET_KEY="new-secret"):
        assert make_cache(location).get("k") is None


def test_integers_are_stored_as_digits_so_incr_is_atomic_in_redis(redis_cache):
    cache, raw = redis_cache
    cache.set("n", 41)
    assert raw.get(cache.make_key("n")) == b"41"
    raw.incr(cache.make_key("n"))
    assert cache.get("n") == 42
    cache.set("big", 2**70)
    assert cache.get("big") == 2**70
    cache.set("flag", True)
    assert cache.get("flag") is True


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_json_and_msgpack_serializers_round_trip(make_cache, any_location, serializer):
    cache = make_cache(any_location, SERIALIZER=serializer)
    cache.set("k", {"a": [1, 2, "three"]}, tags=["t"])
    assert cache.get("k") == {"a": [1, 2, "three"]}


def test_json_refuses_what_it_cannot_encode_and_stores_nothing(make_cache):
    cache = make_cache("memory://json-refuses", SERIALIZER="json")
    with pytest.raises(SerializationError, match=":1:k'.*not JSON serializable") as raised:
        cache.set_many({"fine": 1, "k": object()})
    assert isinstance(raised.value, TypeError)
    assert cache.get_many(["fine", "k"]) == {}


def test_unpicklable_values_raise_a_pickling_error_and_store_nothing(any_cache):
    with pytest.raises(pickle.PicklingError, match="cannot|Can't|pickle"):
        any_cache.set_many({"fine": 1, "bad": lambda: None})
    assert any_cache.get_many(["fine", "bad"]) == {}


def test_a_compressor_shrinks_large_values(redis_cache, make_cache, clean_redis_servers):
    _, raw = redis_cache
    cache = make_cache(
        clean_redis_servers[0].url, COMPRESSOR="django_redis.compressors.zlib.ZlibCompressor"
    )
    value = "x" * 100_000
    cache.set("big", value, tags=["t"])
    assert cache.get("big") == value
    assert len(raw.get(cache.make_key("big"))) < 2_000
    zlib.decompress  # noqa: B018 - the compressor is django-redis', zlib underneath


def test_unsigned_mode_reads_unsigned_entries(make_cache):
    cache = make_cache("memory://unsigned", SIGNED=False, SERIALIZER="json")
    cache.set("k", [1, 2])
    assert cache.get("k") == [1, 2]


def test_a_bad_serializer_path__makes_every_call_refused(make_cache):
    with pytest.raises(ImproperlyConfigured, match="no.such.Serializer"):
        make_cache("memory://bad", SERIALIZER="no.such.Serializer").get("k")


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        ({"SERIALIZER": "msgpack"}, {"SERIALIZER": RECORDING}),
        ({"SERIALIZER": "json"}, {"SERIALIZER": RECORDING}),
        ({"SERIALIZER": RECORDING, "COMPRESSOR": ZLIB}, {"SERIALIZER": RECORDING}),
        ({"SERIALIZER": RECORDING}, {"SERIALIZER": RECORDING, "COMPRESSOR": ZLIB}),
    ],
    ids=["msgpack-to-pickle", "json-to-pickle", "zlib-to-identity", "identity-to-zlib"],
)
def test_an_entry_signed_by_another_serializer_or_compressor__is_a_miss_never_unpickled(
    clean_redis_servers, make_cache, writer, reader
):
    url = clean_redis_servers[0].url
    writing, reading = make_cache(url, **writer), make_cache(url, **reader)  # same prefix and key
    writing.set("k", "attacker-chosen text " * 20)
    RecordingPickleSerializer.loaded.clear()
    assert reading.get("k", "miss") == "miss"
    assert RecordingPickleSerializer.loaded == []  # refused before any unpickling
    assert tampered_count(reading) == 1
    reading.set("k", "own")
    assert reading.get("k") == "own"


def test_a_flipped_byte_among_many__reads_as_a_miss_and_the_rest_as_hits(redis_cache):
    cache, raw = redis_cache
    cache.set_many({"a": 1.5, "b": {"balance": 100}, "c": "x"})
    stored = bytearray(raw.get(cache.make_key("b")))
    stored[-3] ^= 1
    raw.set(cache.make_key("b"), bytes(stored))
    assert cache.get_many(["a", "b", "c"]) == {"a": 1.5, "c": "x"}
    assert tampered_count(cache) == 1


def test_a_flipped_byte__reads_as_a_miss_with_fallback_secrets_too(make_cache):
    location = "memory://rotation-tampered"
    with override_settings(SECRET_KEY="new-secret", SECRET_KEY_FALLBACKS=["old-secret"]):
        cache = make_cache(location)
        cache.set("k", {"balance": 100})
        space = cache._partitions[0].store.space
        made = cache.make_key("k")
        stored = bytearray(space.get(made))
        stored[-3] ^= 1
        space.set(made, bytes(stored))
        assert cache.get("k") is None
        assert tampered_count(cache) == 1
