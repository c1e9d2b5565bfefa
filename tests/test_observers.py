"""The observer seam: features watch a cache through the factories TIERCACHE["OBSERVERS"] names."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_tiercache.checks import check_app_settings
from django_tiercache.hotkeys.record import record_of
from django_tiercache.stats.collection import NULL, recorder_of
from django_tiercache.storage.observers import Building, Observer

SEEN: list[tuple] = []


class Watcher(Observer):
    def read(self, made_keys, found):
        SEEN.append(("read", tuple(made_keys), found))

    def wrote(self, stored):
        SEEN.append(("wrote", stored))

    def invalidated(self, tags):
        SEEN.append(("invalidated", tags))


def watch(building: Building) -> Watcher:
    SEEN.append(("built", building.key_prefix, len(building.partitions)))
    return Watcher()


def stay_out(building: Building) -> None:
    return None


@pytest.fixture(autouse=True)
def _forget_seen():
    SEEN.clear()


def test_observer_from_settings__hears_reads_writes_and_invalidations(settings, make_cache):
    settings.TIERCACHE = {"OBSERVERS": ["tests.test_observers.watch"]}
    cache = make_cache(f"memory://{uuid.uuid4().hex}")
    cache.set("a", 1, tags=["t"])
    cache.get_many(["a", "b"])
    cache.invalidate_tags("t")
    made = (cache.make_key("a"), cache.make_key("b"))
    assert SEEN == [
        ("built", cache.key_prefix, 1),
        ("wrote", 1),
        ("read", made, 1),
        ("invalidated", ("t",)),
    ]


def test_observers__are_all_told_in_order_and_none_stays_out(settings, make_cache):
    settings.TIERCACHE = {
        "OBSERVERS": [
            "tests.test_observers.watch",
            "tests.test_observers.stay_out",
            "tests.test_observers.watch",
        ]
    }
    cache = make_cache(f"memory://{uuid.uuid4().hex}")
    assert len(cache._observers) == 2
    cache.set("a", 1)
    assert [event for event in SEEN if event[0] == "wrote"] == [("wrote", 1), ("wrote", 1)]


def test_no_observers__leave_statistics_and_hot_keys_out_of_the_cache(
    settings, make_cache, shared_redis_url
):
    settings.TIERCACHE = {"OBSERVERS": []}
    cache = make_cache(shared_redis_url, HOT_KEYS=True)
    cache.set("a", 1)
    assert cache.get("a") == 1
    assert recorder_of(cache) is NULL
    assert record_of(cache) is None
    assert all(p.observer is None for p in cache._partitions)


def test_default_observers__give_statistics_and_hot_keys(make_cache, shared_redis_url):
    cache = make_cache(shared_redis_url, HOT_KEYS=True)
    assert recorder_of(cache) is not NULL
    assert record_of(cache) is not None


def test_bad_observer_path__is_tiercache_e008_and_every_call_is_refused(settings, make_cache):
    settings.TIERCACHE = {"OBSERVERS": ["tests.test_observers.no_such_factory"]}
    (message,) = check_app_settings()
    assert message.id == "tiercache.E008"
    assert "no_such_factory" in message.msg
    with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E008: .*no_such_factory"):
        make_cache(f"memory://{uuid.uuid4().hex}").get("k")


def test_observers_not_a_list__is_tiercache_e008(settings):
    settings.TIERCACHE = {"OBSERVERS": "tests.test_observers.watch"}
    (message,) = check_app_settings()
    assert (message.id, message.obj) == ("tiercache.E008", "TIERCACHE")
