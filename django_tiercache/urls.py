"""URLs to include for Prometheus: ``path("tiercache/", include("django_tiercache.urls"))``.

metrics/ serves every TierCache's statistics in Prometheus' text format (needs
the prometheus extra). It asks for no login, as scrapers do not log in: set
TIERCACHE["STATS_METRICS_TOKEN"] to require a bearer token, or expose the URL
only where the scraper can reach it. The admin page needs no URLconf entry.
"""

from django.urls import path

from .stats import prometheus

app_name = "django_tiercache"

urlpatterns = [
    path("metrics/", prometheus.metrics, name="metrics"),
]
