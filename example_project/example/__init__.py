"""The example project; importing it loads the Celery app when celery is installed,
so write_behind's drain triggers reach the worker."""

try:
    from .celery import app as celery_app
except ImportError:  # celery is optional: without it, run manage.py flush_write_behind
    celery_app = None

__all__ = ["celery_app"]
