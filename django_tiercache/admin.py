"""The "Cache statistics" entry of the admin: the page, its JSON, its actions and the key browser.

Registering the table-free Stats model gives the page its place on the admin
index and its URL, /admin/django_tiercache/stats/, with nothing in the
project's URLconf but ``admin.site.urls``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path

from .models import Stats
from .stats import access, views


def _serve_json_beside(site: admin.AdminSite, model_admin: Any) -> None:
    """Add <site>/django_tiercache/stats.json to the site's URLs.

    A ModelAdmin's URLs all sit under <app>/<model>/, and stats.json is beside
    that, not under it; so the site's own get_urls is extended, once.
    """
    if getattr(site, "_tiercache_stats_json", False):
        return
    site_urls = site.get_urls

    def get_urls() -> list:
        json_url = path(
            "django_tiercache/stats.json",
            site.admin_view(model_admin.json_view),
            name="django_tiercache_stats_json",
        )
        return [json_url, *site_urls()]

    site.get_urls = get_urls  # type: ignore[method-assign]
    site._tiercache_stats_json = True  # type: ignore[attr-defined]


@admin.register(Stats)
class StatsAdmin(admin.ModelAdmin):
    def __init__(self, model: Any, admin_site: admin.AdminSite):
        super().__init__(model, admin_site)
        _serve_json_beside(admin_site, self)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.may_view(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access.may_act(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view  # staff only, CSRF-protected, never cached
        return [
            path("", wrap(self.changelist_view), name="django_tiercache_stats_changelist"),
            path("act/", wrap(self.act_view), name="django_tiercache_stats_act"),
            path("keys/", wrap(self.keys_view), name="django_tiercache_stats_keys"),
            path(
                "keys/delete/",
                wrap(self.delete_keys_view),
                name="django_tiercache_stats_delete_keys",
            ),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        return views.page(request, self)

    def act_view(self, request: HttpRequest) -> HttpResponse:
        return views.act(request, self)

    def json_view(self, request: HttpRequest) -> HttpResponse:
        return views.as_json(request, self)

    def keys_view(self, request: HttpRequest) -> HttpResponse:
        return views.keys_page(request, self)

    def delete_keys_view(self, request: HttpRequest) -> HttpResponse:
        return views.delete_keys(request, self)
