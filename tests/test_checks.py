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
        {"CONNECTION_POOL_KWARGS": {"encoding": "latin-1"}},
    ],
)
def test_bad_option_values__are_tiercache_e003(options):
    assert ids_for("memory://", options) == ["tiercache.E003"]


def test_a_connection_encoding_other_than_utf8__is_refused_and_utf8_spelt_any_way_is_not():
    """A tag's slot is the hash of its UTF-8 bytes here and in the Functions: a
    connection that sent "café" as latin-1 would put it in another slot than the
    one this process drops its L1 copies of."""
    latin = {"CONNECTION_POOL_KWARGS": {"encoding": "latin-1", "max_connections": 5}}
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": "memory://", "OPTIONS": latin}}
    with override_settings(CACHES=caches):
        (message,) = check_caches()
    assert message.id == "tiercache.E003"
    assert "'latin-1'" in message.msg and "UTF-8" in message.msg
    assert "Leave 'encoding' out" in message.hint
    for spelt in ("utf-8", "UTF8", "utf_8"):
        assert ids_for("memory://", {"CONNECTION_POOL_KWARGS": {"encoding": spelt}}) == []


def test_partition_names_must_match_location__tiercache_e004():
    assert ids_for(["memory://a", "memory://b"], {"PARTITION_NAMES": ["one"]}) == ["tiercache.E004"]
    assert ids_for(["memory://a", "memory://b"], {"PARTITION_NAMES": ["x", "x"]}) == [
        "tiercache.E004"
    ]


def test_two_redis_partitions_without_a_witness__are_tiercache_w012():
    two = ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"]
    assert ids_for(two, {}) == ["tiercache.W012"]
    assert ids_for(two, {"WITNESS": "database"}) == []
    assert ids_for([*two, "redis://127.0.0.1:6381/0"], {}) == []
    assert ids_for(["memory://a", "memory://b"], {}) == []  # nothing to restart apart


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


def messages_for(cache_entry, **others):
    caches = {"default": {"BACKEND": BACKEND, **cache_entry}, **others}
    with override_settings(CACHES=caches):
        messages = check_caches()
    assert all(m.hint for m in messages)
    return messages


def test_an_option_beside_options__is_tiercache_e013_saying_move_it_into_options():
    """Django ignores keys it does not know in a CACHES entry: PARTITION_NAMES
    there would leave the partitions named by their URLs without a word."""
    entry = {"LOCATION": ["memory://a", "memory://b"], "PARTITION_NAMES": ["a", "b"]}
    (message,) = messages_for(entry)
    assert message.id == "tiercache.E013"
    assert "'PARTITION_NAMES'" in message.msg and "beside OPTIONS" in message.msg
    assert "Move it into OPTIONS" in message.hint
    assert message.is_serious()


def test_an_unknown_key_beside_options__is_tiercache_e013_naming_the_near_one():
    (message,) = messages_for({"LOCATION": "memory://", "TIMOUT": 5})
    assert message.id == "tiercache.E013"
    assert "Did you mean 'TIMEOUT'?" in message.msg


def test_django_cache_keys__are_no_e013():
    entry = {"LOCATION": "memory://", "TIMEOUT": 5, "KEY_PREFIX": "p", "VERSION": 2}
    assert messages_for(entry) == []


@pytest.mark.parametrize(
    ("options", "meant"),
    [
        ({"SOCKET_TIMOUT": 1}, "SOCKET_TIMEOUT"),
        ({"socket_timeout": 1}, "SOCKET_TIMEOUT"),
        ({"TAG_LEASES": 1}, "TAG_LEASE"),
        ({"L1": {"MAXLAG": 1}}, "MAX_LAG"),
        ({"SINGLE_FLIGHT": {"CLAIM_TT": 1}}, "CLAIM_TTL"),
        ({"HOT_KEYS": {"SAMPLES": 0.1}}, "SAMPLE"),
    ],
)
def test_unknown_option_names__say_which_one_was_probably_meant(options, meant):
    (message,) = messages_for({"LOCATION": "memory://", "OPTIONS": options})
    assert f"Did you mean {meant!r}?" in message.msg


@pytest.mark.parametrize(
    ("tiercache", "meant"),
    [
        ({"WRITE_LOCK_TIMOUT": 5}, "WRITE_LOCK_TIMEOUT"),
        ({"STATS_TARGET": {}}, "STATS_TARGETS"),
        ({"STATS_TARGETS": {"HITRATE": 0.5}}, "HIT_RATE"),
        ({"WRITE_BEHIND": {"FLUSH_INTERVALL": 5}}, "FLUSH_INTERVAL"),
    ],
)
def test_unknown_app_setting_names__say_which_one_was_probably_meant(settings, tiercache, meant):
    from django_tiercache.checks import check_app_settings

    settings.TIERCACHE = tiercache
    (message,) = check_app_settings()
    assert f"Did you mean {meant!r}?" in message.msg
    assert message.hint


@pytest.mark.parametrize("target", ["HIT_RATE", "MISS_RATE"])
def test_a_rate_target_given_as_a_percentage__is_tiercache_e006_with_the_fraction(settings, target):
    from django_tiercache.checks import check_app_settings

    settings.TIERCACHE = {"STATS_TARGETS": {target: 80}}
    (message,) = check_app_settings()
    assert message.id == "tiercache.E006"
    assert "percentage" in message.msg and "write 0.8 for 80 %" in message.msg
    settings.TIERCACHE = {"STATS_TARGETS": {target: 0.8, "P95_MS": 25}}
    assert check_app_settings() == []
    settings.TIERCACHE = {"STATS_TARGETS": {"P95_MS": "10ms"}}
    assert [m.id for m in check_app_settings()] == ["tiercache.E006"]


def test_two_aliases_on_one_redis_database_with_one_prefix__are_tiercache_w002():
    """Their entries, tags and statistics would share keys: one's clear() or
    invalidation reaches the other's entries."""
    url = "redis://127.0.0.1:6379/3"
    sessions = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    (message,) = messages_for({"LOCATION": [url]}, sessions=sessions)
    assert message.id == "tiercache.W002" and not message.is_serious()
    assert "CACHES['sessions']" in message.msg and "KEY_PREFIX" in message.hint
    localhost = {**sessions, "LOCATION": "redis://localhost:6379/3"}
    assert [m.id for m in messages_for({"LOCATION": url}, sessions=localhost)] == ["tiercache.W002"]
    other_db = {**sessions, "LOCATION": "redis://127.0.0.1:6379/4"}
    assert messages_for({"LOCATION": url}, sessions=other_db) == []
    prefixed = {**sessions, "KEY_PREFIX": "sessions"}
    assert messages_for({"LOCATION": url}, sessions=prefixed) == []


def test_two_tier_caches_on_one_database__warn_each_of_them():
    url = "redis://127.0.0.1:6379/3"
    caches = {
        "default": {"BACKEND": BACKEND, "LOCATION": url},
        "pages": {
            "BACKEND": BACKEND,
            "LOCATION": [url, "redis://127.0.0.1:6380/0"],
            "OPTIONS": {"WITNESS": "database"},
        },
    }
    with override_settings(CACHES=caches):
        messages = check_caches()
    assert sorted((m.obj, m.id) for m in messages) == [
        ("CACHES['default']", "tiercache.W002"),
        ("CACHES['pages']", "tiercache.W002"),
    ]


CELERY_APP = """
from celery import Celery

from django_tiercache.write_behind.tasks import beat_schedule

app = Celery("proj")
app.conf.beat_schedule = {**app.conf.beat_schedule, **beat_schedule()}
"""

PROJECT_SETTINGS = """
SECRET_KEY = "check-test"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_tiercache"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django_tiercache.backend.TierCache", "LOCATION": "memory://"}}
TIERCACHE = {"WRITE_BEHIND": {"FLUSH_INTERVALL": 5}, "STATS_TARGETS": {"HIT_RATE": 80}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""


def test_a_write_behind_typo_read_at_import__is_a_warning_then_a_check_message(tmp_path):
    """The usual Celery layout imports the app, and so beat_schedule(), while the
    settings load (a worker, a WSGI server): the typo must not be a traceback
    there, and `manage.py check` lists it beside the other problems."""
    import os
    import subprocess
    import sys

    pytest.importorskip("celery")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "__init__.py").write_text("from .celery import app as celery_app\n")
    (project / "celery.py").write_text(CELERY_APP)
    (project / "settings.py").write_text(PROJECT_SETTINGS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DJANGO_SETTINGS_MODULE": "proj.settings"}

    def run(*args):
        done = subprocess.run(  # noqa: S603 - our own interpreter on our own files
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, env=env
        )
        return done.returncode, done.stdout + done.stderr

    code, output = run("-c", "import django; django.setup(); import proj; print('imported')")
    assert "Traceback" not in output
    assert code == 0 and "imported" in output
    assert "tiercache.E010" in output  # logged, not silent
    code, output = run("-m", "django", "check")
    assert "Traceback" not in output
    assert code == 1
    assert "tiercache.E010" in output and "Did you mean 'FLUSH_INTERVAL'?" in output
    assert "tiercache.E006" in output and "write 0.8 for 80 %" in output


def test_write_behind_on_the_bare_default_journal_prefix__is_tiercache_w010(settings):
    from django.core.checks import run_checks

    settings.TIERCACHE = {**settings.TIERCACHE, "WRITE_BEHIND": {}}
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": ""}}
    assert "tiercache.W010" in [m.id for m in run_checks()]
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": "shop"}}
    assert "tiercache.W010" not in [m.id for m in run_checks()]


# -- django-redis settings a migrating project kept --


@pytest.mark.parametrize(
    ("option", "advice"), [("CLIENT_CLASS", "partitioning"), ("IGNORE_EXCEPTIONS", "RAISE_ERRORS")]
)
def test_django_redis_options__are_e002_with_what_to_do_instead(option, advice):
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": "memory://", "OPTIONS": {option: 1}}}
    with override_settings(CACHES=caches):
        (message,) = check_caches()
    assert message.id == "tiercache.E002"
    assert "django-redis" in message.msg and advice in message.hint


@pytest.mark.parametrize(
    ("ignore", "raise_errors", "warned"),
    [(False, False, True), (True, True, True), (True, False, False), (False, True, False)],
)
def test_django_redis_ignore_exceptions__warns_w011_where_behaviour_differs(
    ignore, raise_errors, warned
):
    with override_settings(DJANGO_REDIS_IGNORE_EXCEPTIONS=ignore):
        ids = ids_for("memory://", {"RAISE_ERRORS": raise_errors})
    assert ("tiercache.W011" in ids) is warned


def test_django_redis_logger__warns_w011():
    with override_settings(DJANGO_REDIS_LOGGER="myproject.cache"):
        assert ids_for("memory://") == ["tiercache.W011"]


@pytest.mark.parametrize(
    "tiercache",
    [
        [],
        {"STATS_TARGETS": {"HIT_RATE": 80}},
        {"WRITE_BEHIND": {"BATCH_SIZE": "lots"}},
    ],
)
def test_app_setting_hints__point_at_the_documentation_not_at_readme_sections(settings, tiercache):
    """The README holds no Settings, Statistics or Write-behind section any more: a hint
    sending a newcomer there sends them nowhere."""
    from django_tiercache.checks import check_app_settings

    settings.TIERCACHE = tiercache
    (message,) = check_app_settings()
    assert "README" not in message.hint and "documentation" in message.hint


def test_an_unknown_key_beside_options__hints_at_the_documentation():
    (message,) = messages_for({"LOCATION": "memory://", "OPTIONZ": {}})
    assert "README" not in message.hint and "documentation" in message.hint
