"""The admin's statistics page, its JSON, and its actions.

Wired by admin.py (StatsAdmin), so that ``admin.site.urls`` is all a project
needs. Each view checks its permission itself: viewing wants
django_tiercache.view_cachestats (or change, as everywhere in the admin),
acting wants django_tiercache.change_cachestats.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.cache import caches
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST

from . import actions as actions_module
from . import keys as keys_module
from . import recent
from .aggregation import LIVE_INTERVALS, recent_reports, reports
from .charts import charts
from .collection import tiercache_aliases
from .conf import get_config

RECENT_ACTIONS = 10
LOGGED_KEYS = 20  # keys named in a deletion's log entry; the rest counted


def page(request: HttpRequest, model_admin: Any) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    found = reports()
    for report in found:
        report["charts"] = charts(report["series"]) if "series" in report else []
    offered = actions_module.available()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Cache statistics",
        "opts": model_admin.opts,
        "reports": found,
        "can_change": model_admin.has_change_permission(request),
        "actions": offered,
        "warmers": actions_module.warmer_names() if "run_warmer" in offered else [],
        "targets": get_config()["STATS_TARGETS"],
        "interval": get_config()["STATS_INTERVAL"],
        "live_seconds": LIVE_INTERVALS * get_config()["STATS_INTERVAL"],
        "recent_actions": _recent_actions(model_admin),
        "write_behind": actions_module.write_behind_report(),
        "write_behind_actions": [
            (name, offered[name].label)
            for name in ("flush_write_behind", "retry_dead_letters", "drop_dead_letters")
            if name in offered
        ],
        "write_behind_cache": next(iter(tiercache_aliases()), ""),
        "json_url": reverse(f"{model_admin.admin_site.name}:django_tiercache_stats_json"),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "django_tiercache/stats.html", context)


def as_json(request: HttpRequest, model_admin: Any) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    # Dashboards poll this: it is read from Redis at most once per STATS_INTERVAL.
    return JsonResponse(
        {"caches": recent_reports(), "write_behind": actions_module.write_behind_report()}
    )


@require_POST
def act(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Run one action (POST, CSRF checked by admin_view), log it, go back to the page."""
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    back = HttpResponseRedirect(
        reverse(f"{model_admin.admin_site.name}:django_tiercache_stats_changelist")
    )
    action = actions_module.available().get(request.POST.get("action", ""))
    alias = request.POST.get("cache", "")
    if action is None or alias not in tiercache_aliases():
        messages.error(request, "Unknown action or cache.")
        return back
    try:
        done = action.run(alias, request.POST)
    except actions_module.ActionError as exc:
        messages.error(request, f"{action.label}: {exc}")
        return back
    finally:
        recent.forget()  # the next read sees what the action did
    model_admin.log_change(request, model_admin.model(alias=alias), done)
    messages.success(request, done)
    return back


def keys_page(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """The key browser (stats/keys.py): ?cache=<alias>&pattern=<glob>."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    aliases = tiercache_aliases()
    alias = request.GET.get("cache") or next(iter(aliases), "")
    pattern = request.GET.get("pattern") or "*"
    can_change = model_admin.has_change_permission(request)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Cache keys",
        "opts": model_admin.opts,
        "aliases": aliases,
        "alias": alias,
        "pattern": pattern,
        "can_change": can_change,
        "shown": keys_module.KEYS_SHOWN,
        "partitions": keys_module.browse(alias, pattern, can_change) if alias in aliases else [],
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "django_tiercache/keys.html", context)


@require_POST
def delete_keys(request: HttpRequest, model_admin: Any) -> HttpResponse:
    """Delete the checked keys (POST, CSRF checked by admin_view): first a page that
    names them and asks, as the admin's own deletions do; then delete, log, go back."""
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    alias = request.POST.get("cache", "")
    pattern = request.POST.get("pattern", "*")
    page_url = reverse(f"{model_admin.admin_site.name}:django_tiercache_stats_keys")
    back_url = f"{page_url}?{urlencode({'cache': alias, 'pattern': pattern})}"
    doomed = request.POST.getlist("key")
    if alias not in tiercache_aliases() or not doomed:
        messages.error(request, "No key checked, or an unknown cache.")
        return HttpResponseRedirect(back_url)
    if request.POST.get("confirmed") != "yes":
        context = {
            **model_admin.admin_site.each_context(request),
            "title": "Are you sure?",
            "opts": model_admin.opts,
            "alias": alias,
            "pattern": pattern,
            "doomed": doomed,
            "back_url": back_url,
        }
        request.current_app = model_admin.admin_site.name
        return TemplateResponse(request, "django_tiercache/delete_keys.html", context)
    cache: Any = caches[alias]  # a TierCache (tiercache_aliases): delete_many counts
    deleted = cache.delete_many(doomed)
    done = f"Deleted {_counted(deleted, len(doomed))} from cache {alias!r}: {_named(doomed)}."
    model_admin.log_change(request, model_admin.model(alias=alias), done)
    recent.forget()
    messages.success(request, done)
    return HttpResponseRedirect(back_url)


def _counted(deleted: int, checked: int) -> str:
    """How many went: 3 keys, or 2 of the 3 checked keys when some had gone meanwhile."""
    noun = "key" if checked == 1 else "keys"
    if deleted == checked:
        return f"{checked} {noun}"
    return f"{deleted} of the {checked} checked {noun} (the others were gone already)"


def _named(keys: list[str]) -> str:
    """The keys, for the admin's history: which ones went is what an audit asks."""
    shown = ", ".join(keys[:LOGGED_KEYS])
    return shown if len(keys) <= LOGGED_KEYS else f"{shown} and {len(keys) - LOGGED_KEYS} more"


def _recent_actions(model_admin: Any) -> list[LogEntry]:
    kind = ContentType.objects.get_for_model(model_admin.model, for_concrete_model=False)
    entries = LogEntry.objects.filter(content_type=kind).select_related("user")
    return list(entries.order_by("-action_time")[:RECENT_ACTIONS])
