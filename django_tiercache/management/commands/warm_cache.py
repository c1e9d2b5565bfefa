"""manage.py warm_cache: fill caches ahead of traffic from the registered warmers."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from django_tiercache import warming
from django_tiercache.management.wording import counted
from django_tiercache.orm.registry import registered_models, registration_for

PLAIN_PROGRESS_SECONDS = 5.0
ERRORS_SHOWN = 3  # failed items listed per warmer at verbosity 1 (all that were kept at 2)
COLUMNS = ("warmer", "cache", "items", "warmed", "skipped", "failed", "seconds", "items/s")
# A dry run writes nothing: its counts say what a real run would have warmed.
DRY_RUN_COLUMNS = tuple("would warm" if c == "warmed" else c for c in COLUMNS)


class Command(BaseCommand):
    help = (
        "Fill caches ahead of traffic: run warmers registered with @django_tiercache.warmer, "
        "warm registered models, or rewarm the hottest keys. Exit status 0 when every item "
        "was written, 1 when some failed, 2 for a bad request (nothing is written then)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME", help="Warmers to run.")
        parser.add_argument(
            "--list", action="store_true", help="List the warmers and models, then stop."
        )
        parser.add_argument("--all", action="store_true", help="Run every registered warmer.")
        parser.add_argument(
            "--model",
            action="append",
            default=[],
            dest="models",
            metavar="LABEL",
            help="Warm a registered model, e.g. shop.Product (repeatable); its instances are "
            "cached as get_object caches them.",
        )
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            dest="filters",
            metavar="LOOKUP=VALUE",
            help="Narrow --model with a Django lookup, e.g. is_active=1 or pk__in=1,2,3 "
            "(repeatable; all must match).",
        )
        parser.add_argument(
            "--cache",
            metavar="ALIAS",
            help="Cache alias to fill (and, with --hot, whose hot keys to rewarm). Default: "
            "each warmer's own cache; 'default' for --hot.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=warming.DEFAULT_BATCH_SIZE,
            metavar="N",
            help="Items per batch: one set_many (or one multi-get with --only-missing) per "
            "batch. Default: %(default)s.",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=warming.DEFAULT_CONCURRENCY,
            metavar="N",
            help="Threads writing batches (and loading model rows); 1 works in this thread "
            "only. Default: %(default)s.",
        )
        parser.add_argument(
            "--only-missing",
            action="store_true",
            help="Skip keys that are already cached (models always do: a cached instance is "
            "current). Default: overwrite.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Load and count, write nothing. Default: off.",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help="Cache timeout of the entries written. Default: the warmer's, else the "
            "model's registration, else the cache's TIMEOUT.",
        )
        parser.add_argument(
            "--hot",
            action="store_true",
            help="Rewarm the hottest keys of the cache (OPTIONS['HOT_KEYS']) from the warmer "
            "or model that produced them, hottest first.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options["verbosity"]
        if options["list"]:
            self._list()
            return
        fields = warming.Request.__dataclass_fields__
        request = warming.Request(**{k: v for k, v in options.items() if k in fields})
        try:
            jobs = warming.plan(request)
        except warming.WarmingError as exc:
            raise CommandError(str(exc), returncode=2) from None
        if not jobs:
            self.stdout.write("No warmers are registered: nothing to do.")
            return
        runner = warming.Runner(request, self._progress_reporter(request.dry_run))
        results = [runner.run(job) for job in jobs]
        self._summary(results, request.dry_run)

    # -- output --

    def _list(self) -> None:
        warming.discover()
        warmers = warming.registered_warmers()
        self.stdout.write(self.style.MIGRATE_HEADING("Warmers:"))
        for w in warmers.values():
            doc = (w.function.__doc__ or "").strip().splitlines()
            line = f"  {w.name}  (cache {w.cache or 'default'}; {w.source})"
            self.stdout.write(line + (f"  {doc[0]}" if doc else ""))
        if not warmers:
            self.stdout.write("  none registered")
        self.stdout.write(self.style.MIGRATE_HEADING("Models (--model):"))
        models = sorted(registered_models(), key=lambda m: m._meta.label)
        for model in models:
            self.stdout.write(
                f"  {model._meta.label}  (cache {registration_for(model).cache_alias})"
            )
        if not models:
            self.stdout.write("  none registered")

    def _progress_reporter(self, dry_run: bool) -> warming.Progress:
        if self.verbosity < 1:
            return lambda result, finished: None
        if self.stderr.isatty():
            try:
                return _BarProgress(self.stderr, dry_run)
            except ImportError:  # tqdm is optional: pip install django-tiercache[warming]
                pass
        return _PlainProgress(self.stdout, self.verbosity, dry_run)

    def _summary(self, results: list[warming.Result], dry_run: bool) -> None:
        if self.verbosity >= 1:
            self._table(results, dry_run)
            for result in results:
                self._errors(result)
        failed = sum(r.failed for r in results)
        stopped = [r.label for r in results if r.error]
        if failed or stopped:
            parts = [f"{counted(failed, 'item')} failed."] if failed else []
            if stopped:
                who = counted(len(stopped), "warmer")
                parts.append(f"{who} stopped by an error: {', '.join(stopped)}.")
            raise CommandError(" ".join(parts), returncode=1)
        if self.verbosity >= 1:
            warmed = counted(sum(r.warmed for r in results), "entry", "entries")
            if dry_run:
                message = f"Dry run: {warmed} would be warmed; nothing was written."
            else:
                message = f"{warmed} written."
            self.stdout.write(self.style.SUCCESS(message))

    def _table(self, results: list[warming.Result], dry_run: bool = False) -> None:
        columns = DRY_RUN_COLUMNS if dry_run else COLUMNS
        rows = [
            (
                r.label,
                r.alias,
                f"{r.items:,}",
                f"{r.warmed:,}",
                f"{r.skipped:,}",
                f"{r.failed:,}",
                f"{r.seconds:.2f}",
                f"{r.rate:,.0f}",
            )
            for r in results
        ]
        widths = [max(len(str(row[i])) for row in [columns, *rows]) for i in range(len(columns))]

        def line(row: tuple) -> str:
            cells = [
                str(c).ljust(w) if i < 2 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            return "  ".join(cells)

        self.stdout.write(self.style.MIGRATE_HEADING(line(columns)))
        for row, result in zip(rows, results, strict=True):
            self.stdout.write(line(row), self.style.ERROR if not result.ok else None)

    def _errors(self, result: warming.Result) -> None:
        if result.error:
            kept = counted(result.items, "item")
            self.stderr.write(
                self.style.ERROR(f"{result.label} stopped by an error after {kept}: {result.error}")
            )
        shown = result.errors if self.verbosity >= 2 else result.errors[:ERRORS_SHOWN]
        for error in shown:
            self.stderr.write(f"{result.label}: failed {error}")
        if result.failed > len(shown):
            more = counted(result.failed - len(shown), "more item")
            self.stderr.write(f"{result.label}: {more} failed.")


class _PlainProgress:
    """Lines for logs: one per job every few seconds (every batch at verbosity 2+)."""

    def __init__(self, out: OutputWrapper, verbosity: int, dry_run: bool = False):
        self.out, self.verbosity = out, verbosity
        self.warmed = "would warm" if dry_run else "warmed"
        self.last: dict[str, float] = {}

    def __call__(self, result: warming.Result, finished: bool) -> None:
        if finished:  # the summary reports it
            return
        now = time.monotonic()
        last = self.last.setdefault(result.label, now)
        if self.verbosity < 2 and now - last < PLAIN_PROGRESS_SECONDS:
            return
        self.last[result.label] = now
        self.out.write(
            f"{result.label}: {counted(result.items, 'item')}, {result.warmed:,} {self.warmed}, "
            f"{result.skipped:,} skipped, {result.failed:,} failed."
        )


class _BarProgress:
    """A tqdm bar per job, on a terminal."""

    def __init__(self, out: OutputWrapper, dry_run: bool = False):
        from tqdm import tqdm

        self.tqdm, self.out = tqdm, out
        self.warmed = "would warm" if dry_run else "warmed"
        self.bars: dict[str, Any] = {}

    def __call__(self, result: warming.Result, finished: bool) -> None:
        bar = self.bars.get(result.label)
        if bar is None:
            bar = self.bars[result.label] = self.tqdm(
                desc=result.label, unit=" items", file=_Stream(self.out), leave=True
            )
        bar.update(result.items - bar.n)
        # As text: tqdm shows numbers in three significant digits (20005 as 2e+4).
        bar.set_postfix_str(
            f"{self.warmed} {result.warmed:,}, skipped {result.skipped:,}, failed {result.failed:,}"
        )
        if finished:
            bar.close()


class _Stream:
    """tqdm draws with carriage returns: write through the command's stream as is."""

    def __init__(self, out: OutputWrapper):
        self.out = out

    def write(self, text: str) -> None:
        self.out.write(text, ending="")

    def flush(self) -> None:
        self.out.flush()
