from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"
# Local demo credentials, printed by `make run`; refused unless DEBUG is on.
PASSWORD = "admin"  # noqa: S105


class Command(BaseCommand):
    help = (
        "Create or reset the local superuser admin/admin. Refuses to run unless DEBUG is "
        "True, because the password is public."
    )

    def handle(self, *args: object, **options: object) -> None:
        if not settings.DEBUG:
            raise CommandError("ensure_local_admin only runs with DEBUG = True (local use).")
        user, created = get_user_model().objects.get_or_create(username=USERNAME)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(PASSWORD)
        user.save()
        verb = "created" if created else "updated"
        self.stdout.write(self.style.SUCCESS(f"ensure_local_admin: superuser {USERNAME} {verb}"))
