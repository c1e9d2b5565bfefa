"""Redis memory per cache entry: TierCache against django-redis storing the same values.

    python benchmarks/bench_memory.py [--entries N] [--json PATH]

For each case, the server is emptied, the cache is warmed with one entry (the
Functions library loaded, the partition's meta hash and generation made), and
INFO memory's used_memory is read; then N entries (default 100,000) of the
benchmarks' value (a user record of about 210 bytes pickled, benchmarks/_sample.py)
are written and used_memory is read again. Bytes per entry is the difference
over N, keys per entry the DBSIZE difference over N. The cases:

- django-redis: the anchor, the same keys, values and timeout;
- untagged;
- 1 tag: the row's instance tag ("shop.product:<pk>", what get_object writes);
- 2 tags: instance + model ("shop.product"), as register() + get_object produce;
- 5 tags: instance + model + three shared ones (a customer of 20,000, a
  category of 500, a vendor of 50), as a page built from several rows has.

Then where one entry's bytes go: MEMORY USAGE of an entry and of each key its
tags keep on the server, sampled on the 2-tag case (the redis-server's own
account of a key: its value, its key name, the dict entries and the allocator's
rounding), beside the value's own length.

Redis: one throw-away redis-server of its own on a free port (no persistence),
so that nothing else's keys or clients move used_memory.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from _sample import VALUE  # noqa: E402
from _servers import redis_servers  # noqa: E402

DB = 15
TIMEOUT_S = 600
BATCH = 1000
# (label, numerator, denominator, target): ratios of bytes per entry.
TARGETS = [
    ("2 tags (instance + model) / django-redis", "tc.2", "djr", 1.3),
    ("untagged / django-redis", "tc.0", "djr", 1.1),
]


def key_of(i: int) -> str:
    return f"tiercache:object:shop.product:{i}"


def tags_of(i: int, count: int) -> tuple[str, ...]:
    tags = (
        f"shop.product:{i}",
        "shop.product",
        f"shop.customer:{i % 20_000}",
        f"shop.category:{i % 500}",
        f"shop.vendor:{i % 50}",
    )
    return tags[:count]


CASES = [
    ("djr", "django-redis", None),
    ("tc.0", "TierCache, untagged", 0),
    ("tc.1", "TierCache, 1 tag (instance)", 1),
    ("tc.2", "TierCache, 2 tags (instance + model)", 2),
    ("tc.5", "TierCache, 5 tags (instance + model + 3 shared)", 5),
]


def configure(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",  # noqa: S106
        USE_TZ=True,
        INSTALLED_APPS=[],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "djr": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "TIMEOUT": TIMEOUT_S,
            },
            "tc": {
                "BACKEND": "django_tiercache.backend.TierCache",
                "LOCATION": url,
                "TIMEOUT": TIMEOUT_S,
            },
        },
        TIERCACHE={"STATS": False},
    )
    django.setup()


def fill(cache: Any, tag_count: int | None, entries: int) -> None:
    """Write the entries in batches (set_many; set_many_tagged, each with its own tags)."""
    for first in range(0, entries, BATCH):
        batch = range(first, min(first + BATCH, entries))
        if not tag_count:
            cache.set_many({key_of(i): VALUE for i in batch})
        else:
            cache.set_many_tagged({key_of(i): (VALUE, tags_of(i, tag_count)) for i in batch})


def used_memory(raw: redis.Redis) -> int:
    return int(raw.info("memory")["used_memory"])


def measure(raw: redis.Redis, case: tuple[str, str, int | None], entries: int) -> dict[str, Any]:
    from django.core.cache import caches

    key, label, tag_count = case
    cache = caches["djr" if tag_count is None else "tc"]
    raw.flushall()
    # Warm up: the library, the meta hash, the generation and the connection pool.
    cache.set("warm-up", VALUE, **({} if tag_count is None else {"tags": ("warm-up",)}))
    cache.delete("warm-up")
    before, keys_before = used_memory(raw), raw.dbsize()
    fill(cache, tag_count, entries)
    after, keys_after = used_memory(raw), raw.dbsize()
    probe = key_of(entries // 2)
    assert cache.get(probe) == VALUE, f"{label}: an entry is not a hit"
    return {
        "key": key,
        "label": label,
        "bytes": (after - before) / entries,
        "keys": (keys_after - keys_before) / entries,
    }


def breakdown(raw: redis.Redis, entries: int) -> list[tuple[str, int, int]]:
    """(what, MEMORY USAGE, length of the stored value) of one entry as django-redis,
    untagged TierCache and 2-tag TierCache store it, and of every key of the
    partition's namespace (tag tokens, generation, meta)."""
    from django.core.cache import caches

    raw.flushall()
    i = entries // 2
    caches["djr"].set("django-redis:" + key_of(i), VALUE)
    caches["tc"].set("untagged:" + key_of(i), VALUE)
    caches["tc"].set(key_of(i), VALUE, tags=tags_of(i, 2))
    rows = [("pickled value alone", 0, len(pickle.dumps(VALUE, pickle.HIGHEST_PROTOCOL)))]
    for name in sorted(raw.keys("*"), key=lambda k: (b"_tc:" in k, k)):
        kind = raw.type(name).decode()
        length = raw.strlen(name) if kind == "string" else raw.execute_command("HLEN", name)
        rows.append((f"{name.decode()} ({kind})", raw.memory_usage(name, samples=0), length))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    with redis_servers(1) as (port,):
        url = f"redis://127.0.0.1:{port}/{DB}"
        configure(url)
        raw = redis.Redis.from_url(url)
        version = raw.info("server")["redis_version"]
        print(f"Redis memory per entry at {args.entries:,} entries (redis-server {version})")
        results = {case[0]: measure(raw, case, args.entries) for case in CASES}
        anchor = results["djr"]["bytes"]
        print(f"\n{'case':<50} {'B/entry':>9} {'keys/entry':>11} {'/ django-redis':>15}")
        for row in results.values():
            ratio = row["bytes"] / anchor
            print(f"{row['label']:<50} {row['bytes']:>9.1f} {row['keys']:>11.3f} {ratio:>15.2f}")
        print("\ntargets")
        verdicts = []
        for label, num, den, limit in TARGETS:
            value = results[num]["bytes"] / results[den]["bytes"]
            status = "PASS" if value <= limit else "MISS"
            verdicts.append({"label": label, "value": value, "limit": limit, "status": status})
            print(f"  {label:<48} {value:5.2f}  <= {limit:<4} {status}")
        print("\nwhere an entry's bytes go (MEMORY USAGE; length: bytes or fields)")
        parts = breakdown(raw, args.entries)
        for what, usage, length in parts:
            print(f"  {what:<66} {usage:>6} {length:>7}")
        raw.flushall()
    if args.json:
        out = {"entries": args.entries, "results": results, "targets": verdicts, "keys": parts}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
