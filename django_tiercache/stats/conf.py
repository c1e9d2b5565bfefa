"""The statistics settings, from the app-wide ``settings.TIERCACHE`` dict (conf.py).

Validated each time they are read (rarely: when a cache is built, once per
publication, once per page), so a bad value names itself at once.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .. import conf


def get_config() -> dict[str, Any]:
    config = dict(conf.get_config())
    targets = conf.DEFAULTS["STATS_TARGETS"]
    config["STATS_TARGETS"] = {**targets, **(config.get("STATS_TARGETS") or {})}
    _validate(config, targets)
    return config


def _validate(config: dict[str, Any], targets: dict[str, float]) -> None:
    interval = config["STATS_INTERVAL"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise ImproperlyConfigured(
            f"TIERCACHE['STATS_INTERVAL'] must be a positive number of seconds, got "
            f"{interval!r}. Set it to e.g. 5.0 or leave it out."
        )
    if not isinstance(config["STATS"], bool):
        raise ImproperlyConfigured(
            f"TIERCACHE['STATS'] must be True or False, got {config['STATS']!r}."
        )
    unknown = set(config["STATS_TARGETS"]) - set(targets)
    if unknown:
        raise ImproperlyConfigured(
            f"TIERCACHE['STATS_TARGETS'] has unknown keys {sorted(unknown)}; "
            f"known keys: {sorted(targets)}."
        )
