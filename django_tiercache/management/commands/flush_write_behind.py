"""manage.py flush_write_behind: drain the write-behind journal now, in this process."""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from redis.exceptions import RedisError

from django_tiercache.management.wording import counted
from django_tiercache.write_behind.drain import drain


class Command(BaseCommand):
    help = (
        "Write every due pending write-behind row to the database now (no Celery worker "
        "needed). Exit status 0 when every row was written, 1 when some rows failed (they "
        "are retried later or become dead letters), 2 when the journal or the database "
        "cannot be reached or the settings are bad (nothing is lost then)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Stop starting new batches after this many seconds. Default: drain until "
            "nothing is due.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        timeout = options["timeout"]
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise CommandError(
                f"--timeout must be a positive number of seconds, got {timeout}", returncode=2
            )
        try:
            outcome = drain(timeout=timeout)
        except (RedisError, ImproperlyConfigured, DatabaseError) as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}", returncode=2) from exc
        if outcome.unavailable is not None:
            raise CommandError(
                f"database unavailable after {counted(outcome.written, 'row')}: "
                f"{outcome.unavailable}; "
                "the remaining rows stay pending",
                returncode=2,
            )
        written = outcome.written
        self.stdout.write(self.style.SUCCESS(f"{written} row{'s' * (written != 1)} written"))
        if outcome.quarantined:
            self.stderr.write(
                f"{outcome.quarantined} row{'s' * (outcome.quarantined != 1)} quarantined "
                "(not written by this site; see manage.py write_behind_dead_letters)"
            )
        if options["verbosity"] >= 2:
            for row, error in outcome.failures:
                self.stderr.write(f"  {row}: {error}")
        if outcome.failed:
            raise CommandError(
                f"{outcome.failed} row{'s' * (outcome.failed != 1)} failed "
                "(see manage.py write_behind_dead_letters)",
                returncode=1,
            )
