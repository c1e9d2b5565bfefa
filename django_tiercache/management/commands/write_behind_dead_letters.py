"""manage.py write_behind_dead_letters: list, re-drive or drop write-behind dead letters."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisError

from django_tiercache.write_behind.journal import get_journal


class Command(BaseCommand):
    help = (
        "Rows that failed MAX_RETRIES times. --list (the default) shows them with their "
        "error; --retry queues them again (a row written since keeps its newer values); "
        "--drop forgets them. Exit status 0 on success, 1 when a named row is not a dead "
        "letter, 2 for a bad request or an unreachable journal."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "rows",
            nargs="*",
            metavar="ROW",
            help="Dead letters to act on, as listed (e.g. shop.product:7). Default: all.",
        )
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--list", action="store_true", help="List dead letters (the default action)."
        )
        action.add_argument(
            "--retry", action="store_true", help="Queue the dead letters again for the drain."
        )
        action.add_argument("--drop", action="store_true", help="Forget the dead letters.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            journal = get_journal()
            letters = journal.dead_letters()
        except (RedisError, ImproperlyConfigured) as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}", returncode=2) from exc
        rows = options["rows"] or list(letters)
        unknown = [row for row in rows if row not in letters]
        rows = [row for row in rows if row in letters]
        if options["retry"]:
            retried = journal.retry_dead(rows)
            self.stdout.write(self.style.SUCCESS(f"{_letters(retried)} queued"))
            kept = sum(1 for row in rows if letters[row].get("quarantined"))
            if kept:
                self.stderr.write(
                    f"{_letters(kept)} quarantined (not written by this site): not retried"
                )
        elif options["drop"]:
            self.stdout.write(self.style.SUCCESS(f"{_letters(journal.drop_dead(rows))} dropped"))
        else:
            for row in rows:
                letter = letters[row]
                mark = "  QUARANTINED" if letter.get("quarantined") else ""
                self.stdout.write(f"{row}  {letter['op']}  attempts={letter.get('attempts')}{mark}")
                self.stdout.write(f"    {letter['error']}")
                if options["verbosity"] >= 2:
                    self.stdout.write(f"    fields: {letter['fields']}")
            self.stdout.write(_letters(len(rows)))
        if unknown:
            raise CommandError(f"not dead letters: {', '.join(unknown)}", returncode=1)


def _letters(count: int) -> str:
    return f"{count} dead letter{'s' * (count != 1)}"
