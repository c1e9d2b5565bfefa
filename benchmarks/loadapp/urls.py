from django.conf import settings
from django.urls import path

from . import views

# An ASGI server (asgi.py) serves the same paths with the async views.
urlpatterns = [
    path("r/<int:pk>/", views.aread if settings.LOAD_ASYNC else views.read),
    path("w/<int:pk>/", views.awrite if settings.LOAD_ASYNC else views.write),
]
