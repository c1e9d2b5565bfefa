"""Who may read the statistics: the admin permissions, and the metrics/ view's rules."""

from __future__ import annotations

import hmac
from typing import Any

from django.http import HttpRequest, HttpResponse

from .conf import get_config

VIEW_PERMISSION = "django_tiercache.view_cachestats"
CHANGE_PERMISSION = "django_tiercache.change_cachestats"


def may_view(user: Any) -> bool:
    """As everywhere in the admin, whoever may change may also view."""
    return bool(user.has_perm(VIEW_PERMISSION) or user.has_perm(CHANGE_PERMISSION))


def may_act(user: Any) -> bool:
    return bool(user.has_perm(CHANGE_PERMISSION))


def refuse_scrape(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read metrics/, else the response that refuses it.

    Closed by default: the bearer token (TIERCACHE["STATS_METRICS_TOKEN"]) or a
    logged-in user who may view the statistics page. Anonymous scrapers are let
    in only with TIERCACHE["STATS_METRICS_PUBLIC"] = True.
    """
    config = get_config()
    if config["STATS_METRICS_PUBLIC"]:
        return None
    token = config["STATS_METRICS_TOKEN"]
    given = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and not given:
        if may_view(user):
            return None
        return HttpResponse("permission denied\n", status=403, content_type="text/plain")
    refused = HttpResponse(
        "a bearer token or a login with django_tiercache.view_cachestats is required\n",
        status=401,
        content_type="text/plain",
    )
    refused["WWW-Authenticate"] = 'Bearer realm="django_tiercache metrics"'
    return refused
