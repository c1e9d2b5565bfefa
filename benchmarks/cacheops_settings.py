"""Settings for the django-cacheops comparison run of bench_invalidation.py.

The same test project, plus cacheops with automatic invalidation on the model
django_tiercache does not register (so the two never act on the same saves).
"""

import os

from tests.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "cacheops"]  # noqa: F405
CACHEOPS_REDIS = os.environ.get("TIERCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
CACHEOPS = {"testapp.unregistered": {"ops": "all", "timeout": 300}}
