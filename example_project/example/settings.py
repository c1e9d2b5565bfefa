"""Settings of the example shop. Local development only: DEBUG is on and the key is public."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A fixed key keeps sessions valid across restarts; it protects nothing, so
# this project must never be exposed beyond the local machine.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-local-only-not-a-secret")
DEBUG = True
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tiercache",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example.urls"
WSGI_APPLICATION = "example.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}


def cache_location() -> str | list[str]:
    """In-process store by default; REDIS_URL selects Redis, a comma-separated list one
    partition per URL."""
    urls = [url.strip() for url in os.environ.get("REDIS_URL", "").split(",") if url.strip()]
    if not urls:
        return "memory://"
    return urls[0] if len(urls) == 1 else urls


CACHES = {
    "default": {
        "BACKEND": "django_tiercache.backend.TierCache",
        "LOCATION": cache_location(),
        "TIMEOUT": 300,
        # This project's own keys on a Redis others may share: its cache entries,
        # statistics and write-behind journal ("example-shop:tiercache:wb"); another
        # project on the same Redis database needs a prefix of its own (tiercache.W002).
        "KEY_PREFIX": "example-shop",
        # On Redis, each process also keeps what it read (L1, coherent across
        # processes); memory:// partitions have no L1, they are one.
        "OPTIONS": {"L1": True},
    }
}

# Write-behind (the product view counters): the journal needs a Redis even when
# the cache is in-process. If it is not answering, views are saved at once.
TIERCACHE = {
    "WRITE_BEHIND": {
        "REDIS_URL": (os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0").split(",")[0],
        "FLUSH_INTERVAL": 5.0,
        "BATCH_SIZE": 200,
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
