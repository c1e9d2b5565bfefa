"""The statistics settings, from the app-wide ``settings.TIERCACHE`` dict (conf.py).

Validated each time they are read (rarely: when a cache is built, once per
publication, once per page), so a bad value names itself at once; the system
check tiercache.E006 reports the same problems at startup.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .. import conf


def get_config() -> dict[str, Any]:
    config = with_targets(conf.get_config())
    found = problems(config)
    if found:
        raise ImproperlyConfigured(found[0])
    return config


def with_targets(config: dict[str, Any]) -> dict[str, Any]:
    """The config with STATS_TARGETS completed from the defaults."""
    targets = conf.DEFAULTS["STATS_TARGETS"]
    given = config.get("STATS_TARGETS")
    return {**config, "STATS_TARGETS": {**targets, **(given if isinstance(given, dict) else {})}}


def problems(config: dict[str, Any]) -> list[str]:
    """Every bad statistics setting, each as a sentence that names the value and the fix."""
    found = []
    interval = config["STATS_INTERVAL"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        found.append(
            f"TIERCACHE['STATS_INTERVAL'] must be a positive number of seconds, got "
            f"{interval!r}. Set it to e.g. 5.0 or leave it out."
        )
    for key in ("STATS", "STATS_METRICS_PUBLIC"):
        if not isinstance(config[key], bool):
            found.append(f"TIERCACHE[{key!r}] must be True or False, got {config[key]!r}.")
    token = config["STATS_METRICS_TOKEN"]
    if token is not None and (not isinstance(token, str) or not token):
        found.append(
            f"TIERCACHE['STATS_METRICS_TOKEN'] must be None or a non-empty string, got {token!r}."
        )
    return found + _target_problems(config["STATS_TARGETS"])


# Rates are fractions of reads: 0.8 is 80 %. A target above 1 cannot be met (a
# hit rate) or cannot be missed (a miss rate), so it is refused, not shown red forever.
RATE_TARGETS = ("HIT_RATE", "MISS_RATE")


def _target_problems(targets: dict[str, Any]) -> list[str]:
    known = conf.DEFAULTS["STATS_TARGETS"]
    found = [
        f"TIERCACHE['STATS_TARGETS'] has an unknown key {key!r}.{conf.did_you_mean(key, known)} "
        f"Known keys: {', '.join(sorted(known))}."
        for key in sorted(targets, key=str)
        if key not in known
    ]
    for key, value in targets.items():
        if key not in known:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key in RATE_TARGETS and number and 1 < value <= 100:
            found.append(
                f"TIERCACHE['STATS_TARGETS'][{key!r}] = {value!r} reads as a percentage; "
                f"rates are fractions: write {value / 100:g} for {value:g} %."
            )
        elif key in RATE_TARGETS and not (number and 0 <= value <= 1):
            found.append(
                f"TIERCACHE['STATS_TARGETS'][{key!r}] must be a fraction from 0 to 1, "
                f"got {value!r}."
            )
        elif key not in RATE_TARGETS and not (number and value > 0):
            found.append(
                f"TIERCACHE['STATS_TARGETS'][{key!r}] must be a positive number of "
                f"milliseconds, got {value!r}."
            )
    return found
