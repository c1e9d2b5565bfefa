"""django_tiercache: a partitioned, tagged, failure-tolerant Django cache backend.

Configure it in CACHES::

    CACHES = {"default": {
        "BACKEND": "django_tiercache.backend.TierCache",
        "LOCATION": ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"],
    }}
"""

__version__ = "0.1.0"
