"""Plans: the jobs a request asks for, every part checked before anything runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import FieldError, ValidationError

from .hot import hot_jobs
from .jobs import Job, Request, WarmingError, check_alias, names_or_none, registered_model
from .warmers import Warmer, discover, registered_warmers


def plan(request: Request) -> list[Job]:
    """The jobs a request asks for; WarmingError (and nothing run) when any part is wrong."""
    if request.batch_size < 1 or request.concurrency < 1:
        raise WarmingError("--batch-size and --concurrency must be at least 1.")
    if request.timeout is not None and request.timeout <= 0:
        raise WarmingError(
            f"--timeout must be a positive number of seconds, got {request.timeout}."
        )
    if request.cache is not None:
        check_alias(request.cache, "--cache")
    discover()
    jobs = [warmer_job(w, request) for w in _chosen_warmers(request)]
    if request.filters and not request.models:
        raise WarmingError("--filter narrows --model; name a model with --model LABEL.")
    lookups = parse_filters(request.filters)
    jobs += [model_job(label, lookups, request) for label in request.models]
    if request.hot:
        jobs += hot_jobs(request)
    if not (request.names or request.all or request.models or request.hot):
        raise WarmingError(
            "Nothing to warm: name warmers, or use --all, --model LABEL or --hot. "
            f"Registered warmers: {names_or_none(registered_warmers())}."
        )
    return jobs


def _chosen_warmers(request: Request) -> list[Warmer]:
    known = registered_warmers()
    if request.all and request.names:
        raise WarmingError("Give warmer names or --all, not both.")
    unknown = [name for name in request.names if name not in known]
    if unknown:
        raise WarmingError(
            f"Unknown warmer(s): {', '.join(unknown)}. Registered warmers: {names_or_none(known)}."
        )
    chosen = list(known.values()) if request.all else [known[n] for n in request.names]
    for w in chosen:
        if request.cache is None and w.cache is not None:
            check_alias(w.cache, f"Warmer {w.name!r}")
    return chosen


def warmer_job(w: Warmer, request: Request) -> Job:
    timeout = w.timeout if request.timeout is None else request.timeout
    return Job(w.name, request.cache or w.cache, ("warmer", w.name), w.function, timeout)


def model_job(label: str, lookups: dict[str, Any], request: Request) -> Job:
    model = registered_model(label, "--model")
    queryset = model._default_manager.all()
    if lookups:
        try:
            queryset = queryset.filter(**lookups)
        except (FieldError, ValueError, TypeError, ValidationError) as exc:
            fields = ", ".join(f.name for f in model._meta.concrete_fields)
            # Django's messages end without a full stop, or with one: one sentence each.
            why = " ".join(map(str, getattr(exc, "messages", [exc]))).strip().rstrip(".")
            listed = "" if "Choices are" in why else f" The fields of {label} are {fields}."
            raise WarmingError(f"Bad --filter for {label}: {why}.{listed}") from None
    timeout = DEFAULT_TIMEOUT if request.timeout is None else request.timeout
    origin = ("model", model._meta.label_lower)
    return Job(model._meta.label_lower, request.cache, origin, lambda: queryset, timeout)


def parse_filters(filters: Iterable[str]) -> dict[str, Any]:
    """``["is_active=1", "pk__in=1,2"]`` -> Django lookups (lists for __in and __range)."""
    lookups: dict[str, Any] = {}
    for text in filters:
        lookup, sep, value = text.partition("=")
        if not sep or not lookup.strip():
            raise WarmingError(f"Bad --filter {text!r}: write LOOKUP=VALUE, e.g. is_active=1.")
        lookup = lookup.strip()
        if lookup.endswith(("__in", "__range")):
            lookups[lookup] = value.split(",") if value else []
        elif lookup.endswith("__isnull"):
            lookups[lookup] = value.lower() in ("1", "true", "yes")
        else:
            lookups[lookup] = value
    return lookups
