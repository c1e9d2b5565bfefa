"""ASGI entry point: the async views await the cache natively (no thread hop).

    cd example_project && ../.venv/bin/uvicorn example.asgi:application

(`pip install uvicorn` first; any ASGI server does.)
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")

application = get_asgi_application()
