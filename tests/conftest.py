"""Fixtures shared by the whole suite: real Redis servers and TierCache factories."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest
import redis

from tests import redis_servers as servers_module
from tests.admin_support import make_user
from tests.redis_servers import SHARED_REDIS_URL

# Tests call the checks of tests/stress.py: pytest explains their failures too.
pytest.register_assert_rewrite("tests.stress")

# Keys of a TierCache's params that Django reads at the top level; every other
# keyword given to make_cache() goes into OPTIONS.
TOP_LEVEL_PARAMS = ("TIMEOUT", "KEY_PREFIX", "VERSION", "KEY_FUNCTION")

PARTITION_COUNT = 4


@pytest.fixture(scope="session")
def redis_servers(tmp_path_factory):
    """Four throw-away redis-server processes, stopped when the session ends."""
    servers = servers_module.start_servers(PARTITION_COUNT, tmp_path_factory.mktemp("redis"))
    yield servers
    servers_module.stop_servers(servers)


@pytest.fixture
def sentinel_set(tmp_path):
    """A primary, its replica and three sentinels, started for the test and stopped after it.

    Function-scoped: a failover test leaves the set changed for good.
    """
    sentinels = servers_module.SentinelSet(tmp_path / "sentinel")
    sentinels.start()
    reset_circuit_breakers()
    yield sentinels
    sentinels.stop()


@pytest.fixture(scope="session")
def shared_sentinel_set(tmp_path_factory):
    """A primary, its replica and three sentinels for the session (no failover on it)."""
    sentinels = servers_module.SentinelSet(tmp_path_factory.mktemp("shared-sentinel"))
    sentinels.start()
    yield sentinels
    sentinels.stop()


@pytest.fixture
def clean_sentinel_set(shared_sentinel_set):
    shared_sentinel_set.primary.flush()
    reset_circuit_breakers()
    return shared_sentinel_set


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """Three masters with one replica each, stopped when the session ends.

    A test that kills a node should use `fresh_redis_cluster` instead.
    """
    cluster = servers_module.RedisClusterSet(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def clean_redis_cluster(redis_cluster):
    redis_cluster.flush()
    reset_circuit_breakers()
    return redis_cluster


@pytest.fixture
def fresh_redis_cluster(tmp_path):
    """A cluster of its own, for a test that kills or fails over a master."""
    cluster = servers_module.RedisClusterSet(tmp_path / "cluster")
    cluster.start()
    reset_circuit_breakers()
    yield cluster
    cluster.stop()


@pytest.fixture
def clean_redis_servers(redis_servers):
    """The four servers, each running, resumed and empty before the test.

    A test may stop or pause any of them; the next test gets them back. Paused
    servers are also resumed after the test so that teardown never hangs.
    """
    for server in redis_servers:
        server.ensure_clean()
    reset_circuit_breakers()
    yield redis_servers
    servers_module.resume_all()


def reset_circuit_breakers():
    """Forget past failures, so that one test's outage is not the next test's.

    Breakers are per URL and process-wide, and a restarted server keeps its URL.
    """
    try:
        from django_tiercache.storage import partition
    except ImportError:
        return
    reset = getattr(partition, "reset_breakers", None)
    if reset is not None:
        reset()
    else:
        partition._breakers.clear()


@pytest.fixture
def shared_database_env():
    """Environment for subprocesses that use the test database this test sees
    (tests/stress.py): PostgreSQL only, since processes cannot share SQLite's memory."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the processes share one database")
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )
    return {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "tests.settings"}


@pytest.fixture
def closed_port_url():
    """A redis:// URL on a free port with nothing listening."""
    return servers_module.closed_port_url()


@pytest.fixture
def shared_redis_url():
    return SHARED_REDIS_URL


# -- the admin pages' users (tests/admin_support.py) --


@pytest.fixture
def staff(django_user_model):
    return make_user(django_user_model, "staff")


@pytest.fixture
def viewer(django_user_model):
    return make_user(django_user_model, "viewer", "view_cachestats")


@pytest.fixture
def operator(django_user_model):
    return make_user(django_user_model, "operator", "view_cachestats", "change_cachestats")


@pytest.fixture
def make_cache():
    """Build TierCache instances directly; each is cleared and closed afterwards.

    ``make_cache(location, TIMEOUT=1, VERSION=2, SIGNED=False)``: TIMEOUT,
    KEY_PREFIX, VERSION and KEY_FUNCTION are Django's top-level params, every
    other keyword goes into OPTIONS. All caches made in one test share a
    KEY_PREFIX unique to that test unless KEY_PREFIX is given.
    """
    from django_tiercache.backend import TierCache

    prefix = f"t{uuid.uuid4().hex[:10]}"
    made = []

    def factory(location, **kwargs):
        params = {"TIMEOUT": 300, "KEY_PREFIX": prefix}
        params.update({k: kwargs.pop(k) for k in TOP_LEVEL_PARAMS if k in kwargs})
        params["OPTIONS"] = kwargs
        cache = TierCache(location, params)
        made.append(cache)
        return cache

    yield factory
    servers_module.resume_all()
    for cache in reversed(made):
        with contextlib.suppress(Exception):
            cache.clear()
        with contextlib.suppress(Exception):
            cache.close()


@pytest.fixture(params=["memory", "redis", "partitioned", "cluster", "sentinel"])
def any_location(request):
    """The LOCATION of each kind of TierCache the Django API tests run against."""
    if request.param == "memory":
        return f"memory://test-{uuid.uuid4().hex}"
    if request.param == "redis":
        return SHARED_REDIS_URL
    if request.param == "cluster":
        return request.getfixturevalue("clean_redis_cluster").url()
    if request.param == "sentinel":
        return request.getfixturevalue("clean_sentinel_set").url()
    servers = request.getfixturevalue("clean_redis_servers")
    return [server.url for server in servers]


@pytest.fixture
def any_cache(any_location, make_cache):
    """An empty TierCache: in-process, one Redis, four Redis partitions, a Redis Cluster,
    or a Sentinel-managed primary."""
    cache = make_cache(any_location)
    cache.clear()
    return cache


@pytest.fixture
def isolated_warmers():
    """An empty warmer registry for the test; the registered warmers come back after it."""
    from django_tiercache import warming

    saved = dict(warming.warmers._warmers)
    warming.warmers._warmers.clear()
    yield
    warming.warmers._warmers.clear()
    warming.warmers._warmers.update(saved)


@pytest.fixture
def journal_prefix(settings):
    """A journal of the test's own (unique key prefix), emptied afterwards."""
    prefix = f"wbt{uuid.uuid4().hex[:8]}"
    settings.TIERCACHE = {
        **settings.TIERCACHE,
        "WRITE_BEHIND": {
            "KEY_PREFIX": prefix,
            "REDIS_URL": servers_module.JOURNAL_REDIS_URL,
            "TRIGGER": False,
            "RETRY_BACKOFF": 0,
            "MAX_RETRIES": 2,
            "CLAIM_TIMEOUT": 30,
        },
    }
    from django_tiercache.write_behind.journal import get_journal

    # Where the journal is: the shared Redis, or with an engine, its primary or master.
    client = get_journal().client
    yield prefix
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match="{" + prefix + "}*"))
        if keys:
            client.delete(*keys)


# TIERCACHE_TEST_ENGINE=cluster (or sentinel) runs the suite with the default cache
# on a Redis Cluster (or a Sentinel-managed primary with a replica and three
# sentinels) of its own: the model layer, cached(), warming ... on that store.
# The Makefile's ENGINE_TESTS says which suites `make test` runs so.
_engine_servers: servers_module.RedisClusterSet | servers_module.SentinelSet | None = None


def _xdist_controller(config) -> bool:
    """True in the pytest-xdist process that only hands tests to its workers."""
    if hasattr(config, "workerinput") or not config.pluginmanager.hasplugin("xdist"):
        return False
    return config.getoption("dist", "no") != "no"


def pytest_configure(config):
    global _engine_servers
    engine = servers_module.TEST_ENGINE
    if not engine:
        return
    engines = {"cluster": servers_module.RedisClusterSet, "sentinel": servers_module.SentinelSet}
    if engine not in engines:
        raise pytest.UsageError(
            f"TIERCACHE_TEST_ENGINE={engine!r}: use one of {sorted(engines)}, or leave it unset"
        )
    if _xdist_controller(config):
        return  # each xdist worker starts servers of its own: clear() flushes them all
    from django.conf import settings

    directory = Path(tempfile.mkdtemp(prefix=f"tiercache-{engine}-"))
    _engine_servers = engines[engine](directory)
    _engine_servers.start()
    settings.CACHES["default"]["LOCATION"] = _engine_servers.url()
    # Processes the tests start (tests/stress.py) read their cache from here.
    os.environ["TIERCACHE_TEST_CACHE"] = json.dumps(settings.CACHES["default"])


def pytest_unconfigure(config):
    if _engine_servers is not None:
        _engine_servers.stop()


# TIERCACHE_TEST_DATABASE_ONLY=1 (make test's PostgreSQL run) keeps only the
# tests that use the database: the others ran on SQLite already, and there is
# nothing for them to find on another database. pytest-django lets a test reach
# the database only through these, so none is missed. (A process a test starts
# inherits DATABASE_URL, the non-test database: those that query rows are handed
# the test database by their test, which has the marker.)
DATABASE_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_reset_sequences",
    "django_db_serialized_rollback",
    "live_server",
    "shared_database_env",  # processes of the test's own on its database (tests/stress.py)
}


def uses_database(item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(
        DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    )


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TIERCACHE_TEST_DATABASE_ONLY") != "1":
        return
    kept = [item for item in items if uses_database(item)]
    deselected = [item for item in items if not uses_database(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
