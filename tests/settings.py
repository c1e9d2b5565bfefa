"""Settings for the django_tiercache test suite.

The database is SQLite in memory unless DATABASE_URL names a PostgreSQL
server, e.g. ``DATABASE_URL=postgres://postgres@127.0.0.1:5432/test``.
The shared Redis the default cache uses can be moved with
TIERCACHE_TEST_REDIS_URL (tests flush only that database, never the server;
under pytest-xdist, worker n uses the n-th database after it: tests/redis_servers.py).
"""

import json
import os
from urllib.parse import unquote, urlsplit

from tests.redis_servers import SHARED_REDIS_URL, TEST_SERVER

SECRET_KEY = "django-tiercache-tests-only-never-use-in-production"  # noqa: S105
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",  # the admin's CSS for the live-server browser test
    "django_tiercache",
    "tests.testapp",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"
STATIC_URL = "/static/"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Hashing passwords slowly buys nothing in tests.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def database_from_url(url):
    """A DATABASES entry for a postgres:// (or postgresql://) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(
            f"DATABASE_URL must be a postgres:// URL, got scheme {parts.scheme!r}; "
            "unset it to use SQLite."
        )
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": database_from_url(os.environ["DATABASE_URL"])}
    # A second database on the same server (the two-databases correctness cases);
    # its test database is made only for tests that ask for it (databases=[..., "other"]).
    DATABASES["other"] = {**DATABASES["default"], "NAME": f"{DATABASES['default']['NAME']}_other"}
else:
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
    }
# Worker processes that must share rows (tests/l1_worker.py) get one SQLite file.
if os.environ.get("TIERCACHE_TEST_SQLITE"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["TIERCACHE_TEST_SQLITE"],
        }
    }

CACHES = {
    "default": {
        "BACKEND": "django_tiercache.backend.TierCache",
        # On Valkey (make test's Valkey run), under Valkey's own URL scheme.
        "LOCATION": SHARED_REDIS_URL.replace("redis://", "valkey://", TEST_SERVER == "valkey"),
        "KEY_PREFIX": "tiercache-tests",
    },
}
# The stress processes (tests/stress.py) get their cache from the test that starts them.
if os.environ.get("TIERCACHE_TEST_CACHE"):
    CACHES["default"] = json.loads(os.environ["TIERCACHE_TEST_CACHE"])

# Short write locks: a test that never commits (pytest-django's plain `db`)
# leaves its locks behind, and a partition that lost its locks refuses fills
# for this long; 6 s keeps either from reaching far into the next tests, and stays
# above what confirming a lock on the default cache may take (tiercache.E015:
# TAG_LEASE 3 s plus the socket timeouts plus a second for the query).
TIERCACHE = {"WRITE_LOCK_TIMEOUT": 6}

# Warnings and errors still reach pytest (through the root logger, which is
# where caplog listens); nothing is printed to the console by Django itself.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["null"], "level": "WARNING", "propagate": True},
        "django_tiercache": {"level": "WARNING", "propagate": True},
    },
}
