"""Settings of the load benchmark's shop; every system gets the same app, data and server.

Environment (set by benchmarks/bench_load.py for each gunicorn or uvicorn it starts):
LOAD_SYSTEM (nocache, django, djredis, cacheops, tier, tier_l1, ceiling),
LOAD_ASYNC (asgi.py sets it),
LOAD_REDIS (comma-separated redis:// URLs, one per TierCache partition), LOAD_DATABASE_URL,
LOAD_SCHEMA (each system reads its own copy of the table, so one system's writes never reach
another's cache), LOAD_SHM and LOAD_PRODUCTS (benchmarks/loadapp/shared.py).
"""

import os
from urllib.parse import unquote, urlsplit

LOAD_SYSTEM = os.environ.get("LOAD_SYSTEM", "nocache")
LOAD_REDIS = os.environ.get("LOAD_REDIS", "redis://127.0.0.1:6379/0").split(",")
LOAD_SHM = os.environ.get("LOAD_SHM", "")
LOAD_PRODUCTS = int(os.environ.get("LOAD_PRODUCTS", "5000"))
# Served by an ASGI server (asgi.py sets it): the async views.
LOAD_ASYNC = bool(os.environ.get("LOAD_ASYNC"))

_db = urlsplit(os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dev_b"))
_schema = os.environ.get("LOAD_SCHEMA", "public")

SECRET_KEY = "bench-only"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "benchmarks.loadapp.urls"
MIDDLEWARE: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["benchmarks.loadapp"]
# Tracebacks of 500s (and the caches' warnings) go to the gunicorn log in the output folder.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        "django_tiercache": {"handlers": ["console"], "level": "WARNING"},
    },
}
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_db.path.lstrip("/")),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
        # Persistent connections for every system: one per worker, opened once. Under ASGI a
        # request's queries run in a thread of its own, so connections come from a pool instead
        # (Django's psycopg pool, 4 per worker process), as Django advises for async.
        "CONN_MAX_AGE": 0 if LOAD_ASYNC else None,
        "OPTIONS": {
            "options": f"-c search_path={_schema}",
            **({"pool": {"min_size": 2, "max_size": 4}} if LOAD_ASYNC else {}),
        },
    }
}

# Every cache keeps entries 300 s (Django's default); each system runs as its documentation shows.
_TIMEOUT = 300
if LOAD_SYSTEM == "django":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": LOAD_REDIS[0],
            "TIMEOUT": _TIMEOUT,
        }
    }
elif LOAD_SYSTEM == "djredis":
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": LOAD_REDIS[0],
            "TIMEOUT": _TIMEOUT,
        }
    }
elif LOAD_SYSTEM in ("tier", "tier_l1"):
    INSTALLED_APPS.append("django_tiercache")
    CACHES = {
        "default": {
            "BACKEND": "django_tiercache.backend.TierCache",
            "LOCATION": LOAD_REDIS,
            "TIMEOUT": _TIMEOUT,
            "OPTIONS": {
                **({"L1": True} if LOAD_SYSTEM == "tier_l1" else {}),
                # The fault run's second variant: missed invalidations also kept in a table.
                **({"WITNESS": "database"} if os.environ.get("LOAD_WITNESS") else {}),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    if LOAD_SYSTEM == "ceiling":  # every product fits: its default culls at 300 entries
        CACHES["default"]["OPTIONS"] = {"MAX_ENTRIES": 10**6}
    if LOAD_SYSTEM == "cacheops":
        # Its automatic caching, as its users run it: every query on the model cached,
        # invalidated by its own signals on save.
        INSTALLED_APPS.append("cacheops")
        CACHEOPS_REDIS = LOAD_REDIS[0]
        CACHEOPS = {"loadapp.product": {"ops": "all", "timeout": _TIMEOUT}}
    elif LOAD_SYSTEM not in ("nocache", "ceiling"):
        raise ValueError(f"unknown LOAD_SYSTEM {LOAD_SYSTEM!r}")
