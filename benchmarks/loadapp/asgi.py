import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.loadapp.settings")
os.environ["LOAD_ASYNC"] = "1"
application = get_asgi_application()
