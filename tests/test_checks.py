"""System checks, and the refusing cache that bad CACHES settings build."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tiercache.backend import MisconfiguredCache, TierCache
from django_tiercache.checks import check_caches

BACKEND = "django_tiercache.backend.TierCache"


def ids_for(location, options=None):
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "tier": {"BACKEND": BACKEND, "LOCATION": location, "OPTIONS": options or {}},
    }
    with override_settings(CACHES=caches):
        messages = check_caches()
    assert all(m.hint for m in messages)
    return [m.id for m in messages]


def test_a_valid_configuration_has_no_messages():
    assert ids_for(["redis://127.0.0.1:6379/0", "memory://x"], {"TAG_LEASE": 2}) == []


@pytest.mark.parametrize(
    "location",
    [
        "",
        [],
        "http://example.com",
        "redis://127.0.0.1:notaport/0",
        "redis:///0",
        [None],
        ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"],
    ],
)
def test_bad_locations__are_tiercache_e001(location):
    assert "tiercache.E001" in ids_for(location)


def test_unknown_options__are_tiercache_e002_and_name_the_key():
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": "memory://", "OPTIONS": {"TIMOUT": 1}}}
    with override_settings(CACHES=caches):
        (message,) = check_caches()
    assert message.id == "tiercache.E002"
    assert "'TIMOUT'" in message.msg
    assert "SOCKET_TIMEOUT" in message.hint


@pytest.mark.parametrize(
    "options",
    [
        {"SOCKET_TIMEOUT": 0},
        {"SOCKET_TIMEOUT": "1"},
        {"BREAKER_FAILURES": 0},
        {"SIGNED": "yes"},
        {"TAG_LEASE": -1},
        {"SERIALIZER": "nowhere.Serializer"},
        {"COMPRESSOR": 3},
    ],
)
def test_bad_option_values__are_tiercache_e003(options):
    assert ids_for("memory://", options) == ["tiercache.E003"]


def test_partition_names_must_match_location__tiercache_e004():
    assert ids_for(["memory://a", "memory://b"], {"PARTITION_NAMES": ["one"]}) == ["tiercache.E004"]
    assert ids_for(["memory://a", "memory://b"], {"PARTITION_NAMES": ["x", "x"]}) == [
        "tiercache.E004"
    ]


def test_pickle_with_signing_off__is_tiercache_w001():
    assert ids_for("memory://", {"SIGNED": False}) == ["tiercache.W001"]
    assert ids_for("memory://", {"SIGNED": False, "SERIALIZER": "json"}) == []


def test_a_bad_configuration__builds_a_cache_that_refuses_every_call_naming_the_value():
    cache = TierCache("memory://", {"OPTIONS": {"SOCKET_TIMEOUT": -2}})
    assert isinstance(cache, MisconfiguredCache)
    for call in (lambda: cache.get("k"), lambda: cache.set("k", 1), cache.clear):
        with pytest.raises(ImproperlyConfigured, match=r"tiercache\.E003: .*'SOCKET_TIMEOUT'.*-2"):
            call()
    cache.close()  # Django closes every cache it built after each request: that must not raise
    with pytest.raises(ImproperlyConfigured, match="ftp://x"):
        TierCache("ftp://x", {}).get_many(["k"])


def test_a_good_configuration__builds_a_tier_cache():
    assert type(TierCache("memory://good", {})) is TierCache


def test_check_runs__report_the_problem_with_its_id_and_hint_instead_of_raising(settings):
    """Django's own cache checks build every cache before any check is shown: the
    build must not raise, so that `manage.py check` lists the problem."""
    from django.core import checks

    settings.CACHES = {**settings.CACHES, "bad": {"BACKEND": BACKEND, "LOCATION": "nope://"}}
    messages = checks.run_checks(tags=[checks.Tags.caches])
    (bad,) = [m for m in messages if m.obj == "CACHES['bad']"]
    assert bad.id == "tiercache.E001" and "'nope'" in bad.msg and bad.hint
    assert not bad.msg.startswith("CACHES[")  # Django prints obj before the message


def strict_observer(building):
    raise ImproperlyConfigured("the audit observer needs AUDIT_URL")


def test_a_build_failure_no_other_check_names__is_tiercache_e012(settings):
    """A project's own observer factory refusing its settings: the options and
    TIERCACHE are valid, the cache still cannot be built."""
    from django.core import checks

    settings.TIERCACHE = {"OBSERVERS": ["tests.test_checks.strict_observer"]}
    settings.CACHES = {**settings.CACHES, "strict": {"BACKEND": BACKEND, "LOCATION": "memory://s"}}
    messages = checks.run_checks(tags=[checks.Tags.caches])
    (built,) = [m for m in messages if m.obj == "CACHES['strict']"]
    assert built.id == "tiercache.E012"
    assert "needs AUDIT_URL" in built.msg and built.hint


def test_a_cache_refused_for_bad_options__is_not_also_e012(settings):
    from django.core import checks

    settings.CACHES = {
        **settings.CACHES,
        "bad": {"BACKEND": BACKEND, "LOCATION": "memory://b", "OPTIONS": {"SOCKET_TIMEOUT": 0}},
    }
    messages = checks.run_checks(tags=[checks.Tags.caches])
    assert [m.id for m in messages if m.obj == "CACHES['bad']"] == ["tiercache.E003"]


def test_unknown_app_settings__are_tiercache_e005(settings):
    from django_tiercache.checks import check_app_settings

    settings.TIERCACHE = {"WRITE_LOCK_TIMOUT": 5}
    (message,) = check_app_settings()
    assert message.id == "tiercache.E005"
    assert "WRITE_LOCK_TIMEOUT" in message.hint
    settings.TIERCACHE = {"WRITE_LOCK_TIMEOUT": 5}
    assert check_app_settings() == []


def test_write_behind_on_the_bare_default_journal_prefix__is_tiercache_w010(settings):
    from django.core.checks import run_checks

    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_BEHIND": {}}
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": ""}}
    assert "tiercache.W010" in [m.id for m in run_checks()]
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": "shop"}}
    assert "tiercache.W010" not in [m.id for m in run_checks()]
