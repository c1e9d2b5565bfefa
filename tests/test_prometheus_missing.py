"""Without the prometheus extra: the site keeps its URLs, the view says what to
install, and a system check says it at start-up (tiercache.E016)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.core.checks import run_checks
from django.http import HttpResponse
from django.test import override_settings
from django.urls import include, path

ROOT = Path(__file__).resolve().parent.parent


def page(request):
    return HttpResponse("a page of the site")


# This module is the URLconf the child process uses: the app's URLs beside a page of the site's.
urlpatterns = [
    path("tiercache/", include("django_tiercache.urls")),
    path("page/", page),
]

# The child hides prometheus_client the way an absent package is absent
# (importing it raises ImportError), then asks the checks and the views.
CHILD = """
import json, sys
sys.modules["prometheus_client"] = None
import django
django.setup()
from django.conf import settings
from django.core.checks import run_checks
from django.test import Client, override_settings
from django.urls import clear_url_caches

override_settings(TIERCACHE={"STATS_METRICS_PUBLIC": True}, ALLOWED_HOSTS=["testserver"]).enable()
out = {}
for urlconf in ("tests.urls", "tests.test_prometheus_missing"):
    settings.ROOT_URLCONF = urlconf
    clear_url_caches()
    out[urlconf] = [
        {"id": m.id, "msg": m.msg, "hint": m.hint}
        for m in run_checks() if m.id == "tiercache.E016"
    ]
client = Client()
metrics, other = client.get("/tiercache/metrics/"), client.get("/page/")
out["metrics"] = [metrics.status_code, metrics.content.decode()]
out["page"] = [other.status_code, other.content.decode()]
print(json.dumps(out))
"""


def without_prometheus() -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_prometheus_client__the_site_serves_and_metrics_answer_503_with_the_fix():
    found = without_prometheus()
    assert found["page"] == [200, "a page of the site"]
    status, body = found["metrics"]
    assert status == 503
    assert "pip install 'django-tiercache[prometheus]'" in body
    # The URLconf that includes the view gets the check; one that does not, none.
    (message,) = found["tests.test_prometheus_missing"]
    assert "/tiercache/metrics/" in message["msg"]
    assert "django-tiercache[prometheus]" in message["hint"]
    assert found["tests.urls"] == []


@override_settings(ROOT_URLCONF=__name__)
def test_with_prometheus_client__the_included_view_raises_no_check():
    assert "tiercache.E016" not in [m.id for m in run_checks()]
