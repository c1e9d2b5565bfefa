"""URLs to include for Prometheus: ``path("tiercache/", include("django_tiercache.urls"))``.

metrics/ serves every TierCache's statistics in Prometheus' text format (needs
the prometheus extra). It is closed by default: it wants the bearer token of
TIERCACHE["STATS_METRICS_TOKEN"] or a logged-in user with
django_tiercache.view_cachestats; TIERCACHE["STATS_METRICS_PUBLIC"] = True opens
it to anonymous scrapers. The admin page needs no URLconf entry.
"""

from django.urls import path

from .stats import prometheus

app_name = "django_tiercache"

urlpatterns = [
    path("metrics/", prometheus.metrics, name="metrics"),
]
