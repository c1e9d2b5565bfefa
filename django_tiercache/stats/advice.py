"""What a partition's server configuration means for the cache, in one sentence each.

The wording lives here alone, so that it can be adjusted in one place; the
page, the JSON view and the README show these sentences as they are.
"""

from __future__ import annotations

# Past this many seconds between this host's clock and a server's, the page warns.
SKEW_WARNING_SECONDS = 1.0


def eviction_warning(policy: str | None) -> str | None:
    """The guarantee a maxmemory-policy weakens, or None for the recommended volatile-* family."""
    if policy == "noeviction":
        return "When full, cache writes fail (invalidations still go through)."
    if policy and policy.startswith("allkeys-"):
        return (
            "Redis may evict invalidation metadata; each such loss makes the partition drop "
            "its tagged entries (costs hits, never correctness). volatile-lru with a timeout "
            "on every entry is recommended."
        )
    return None


def skew_warning(skew_seconds: float | None) -> str | None:
    """A warning when the server's clock is more than SKEW_WARNING_SECONDS from this host's."""
    if skew_seconds is None or abs(skew_seconds) <= SKEW_WARNING_SECONDS:
        return None
    return (
        f"The server's clock is {skew_seconds:+.1f} s from this host's. The cache's "
        "correctness does not depend on it (it takes its deadlines from Redis), but log "
        "timestamps and the statistics' minute buckets do."
    )
