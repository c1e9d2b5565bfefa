"""Mixed cache traffic for the admin's "Cache statistics" page.

    python manage.py demo_traffic --seconds 30

Reads follow a skewed popularity (a few keys are read most of the time), as
real traffic does, so the hit rate settles in the 80-95% range; writes,
deletes and tag invalidations (mostly per product, sometimes every product)
are mixed in. The figures reach the page of another process through Redis:
run the example with REDIS_URL set, or use --server to send the traffic
through the running site instead when it caches in its own memory.
"""

from __future__ import annotations

import random
import time
import urllib.request
from typing import Any

from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError

from shop.models import Product
from shop.views import PRODUCT_TIMEOUT, product_key, product_tags

# The share of each kind of operation, in order; the rest are reads.
WRITE_SHARE, DELETE_SHARE, INVALIDATE_SHARE = 0.06, 0.01, 0.01
# Of invalidations: one product's tag, else one fragment group's tag, and rarely
# "shop.product", which drops every product at once.
PRODUCT_SHARE, ALL_PRODUCTS_SHARE = 0.6, 0.01
FRAGMENT_GROUPS = 40  # fragments carry one group tag each: an invalidation drops 1/40 of them
SKEW = 3.0  # popularity: key index = keys * random() ** SKEW


class Command(BaseCommand):
    help = (
        "Generate mixed cache reads, writes, deletes and tag invalidations for a while, so "
        "that the admin's Cache statistics page shows live figures."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--seconds", type=float, default=30.0, help="How long to run (default: 30)."
        )
        parser.add_argument(
            "--rate", type=int, default=300, help="Operations per second at most (default: 300)."
        )
        parser.add_argument(
            "--keys", type=int, default=400, help="Distinct page fragments read (default: 400)."
        )
        parser.add_argument(
            "--cache", default="default", help="The cache alias to use (default: default)."
        )
        parser.add_argument(
            "--server",
            default=None,
            help="Request product pages of the running site at this URL instead, e.g. "
            "http://127.0.0.1:8000 (reads and fills only; default: off).",
        )
        parser.add_argument("--seed", type=int, default=None, help="Random seed (default: none).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["seconds"] <= 0 or options["rate"] < 1 or options["keys"] < 1:
            raise CommandError("--seconds, --rate and --keys must be positive.")
        pks = list(Product.objects.values_list("pk", flat=True))
        if not pks:
            raise CommandError("No products: run `python manage.py seed_demo` first.")
        rng = random.Random(options["seed"])  # noqa: S311 - traffic shape, not security
        if options["server"]:
            step = self._http_step(options["server"].rstrip("/"), pks, rng)
        else:
            step = self._cache_step(options["cache"], options["keys"], pks, rng)
        self.verbosity = options["verbosity"]
        done = self._run(step, options["seconds"], options["rate"])
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(done.items()))
        self.stdout.write(self.style.SUCCESS(f"demo_traffic: {summary}"))

    def _run(self, step: Any, seconds: float, rate: int) -> dict[str, int]:
        done: dict[str, int] = {}
        started = time.monotonic()
        report_at = started + 5
        n = 0
        while (now := time.monotonic()) - started < seconds:
            kind = step()
            done[kind] = done.get(kind, 0) + 1
            n += 1
            ahead = started + n / rate - now
            if ahead > 0:
                time.sleep(ahead)
            if now >= report_at and self.verbosity >= 2:
                self.stdout.write(f"{now - started:.0f} s: {n} operations")
                report_at += 5
        return done

    def _cache_step(self, alias: str, keys: int, pks: list[int], rng: random.Random) -> Any:
        if alias not in caches:
            raise CommandError(f"Unknown cache alias {alias!r}.")
        cache = caches[alias]
        if all(p.url.startswith("memory:") for p in getattr(cache, "_partitions", [])):
            self.stderr.write(
                self.style.WARNING(
                    f"Cache {alias!r} lives in this process's memory: the site's statistics "
                    "page will not see this traffic. Run the example with REDIS_URL set, "
                    "or use --server http://127.0.0.1:8000."
                )
            )

        def step() -> str:
            roll = rng.random()
            pk = rng.choice(pks)
            if roll < INVALIDATE_SHARE:
                cache.invalidate_tags(self._tag_to_invalidate(pk, rng))
                return "invalidations"
            if roll < INVALIDATE_SHARE + DELETE_SHARE:
                cache.delete(f"fragment:{int(keys * rng.random() ** SKEW)}")
                return "deletes"
            if roll < INVALIDATE_SHARE + DELETE_SHARE + WRITE_SHARE:
                cache.set(f"visits:{pk}", rng.randrange(10_000), timeout=PRODUCT_TIMEOUT)
                return "writes"
            if rng.random() < 0.3:
                cache.get_or_set(
                    product_key(pk),
                    lambda: Product.objects.get(pk=pk),
                    timeout=PRODUCT_TIMEOUT,
                    tags=product_tags(pk),
                )
            else:
                n = int(keys * rng.random() ** SKEW)
                tags = [f"fragment:{n % FRAGMENT_GROUPS}"]
                cache.get_or_set(f"fragment:{n}", lambda: f"<p>fragment {n}</p>", tags=tags)
            return "reads"

        return step

    @staticmethod
    def _tag_to_invalidate(pk: int, rng: random.Random) -> str:
        roll = rng.random()
        if roll < ALL_PRODUCTS_SHARE:
            return "shop.product"
        if roll < PRODUCT_SHARE:
            return f"shop.product:{pk}"
        return f"fragment:{rng.randrange(FRAGMENT_GROUPS)}"

    def _http_step(self, server: str, pks: list[int], rng: random.Random) -> Any:
        if not server.startswith(("http://", "https://")):
            raise CommandError(f"--server must be an http(s):// URL, got {server!r}.")

        def step() -> str:
            url = f"{server}/products/{rng.choice(pks)}/"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http(s) only
                    response.read()
            except OSError as exc:
                raise CommandError(f"{url}: {exc}") from exc
            return "page views"

        return step
