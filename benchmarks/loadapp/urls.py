from django.urls import path

from . import views

urlpatterns = [
    path("r/<int:pk>/", views.read),
    path("w/<int:pk>/", views.write),
]
