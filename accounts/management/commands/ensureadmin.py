import os
import secrets
import sys

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

USERNAME = "admin"


def manage_command() -> str:
    """How to run manage.py with the Python running this one (.venv/bin/python under make run), to print it."""
    python = os.path.relpath(sys.executable)
    return f"{python if not python.startswith('..') else sys.executable} manage.py"


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password unless a superuser exists, and say how to log in."

    def handle(self, *args, **options):
        User = get_user_model()
        site = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
        superusers = list(User.objects.filter(is_superuser=True).order_by("pk").values_list("username", flat=True))
        if superusers:
            self.stdout.write(
                f"Log in at {site}/accounts/login/ as {', '.join(superusers)}; "
                f"forgot the password? {manage_command()} changepassword {superusers[0]}"
            )
            return
        if User.objects.filter(username=USERNAME).exists():
            raise CommandError(
                f"No superuser exists and the username {USERNAME!r} is taken by an ordinary user: "
                f"create one with {manage_command()} createsuperuser"
            )

        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=USERNAME, email="", password=password)
        password_file = settings.VAR_DIR / "admin-password"
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start so the password is never readable by others.
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        os.chmod(password_file, 0o600)

        self.stdout.write(
            self.style.SUCCESS("Created the administrator account. The password is shown only this once:")
            + f"\n\n    username  {USERNAME}\n    password  {password}\n\n"
            f"Log in at {site}/accounts/login/ (chat) or {site}/admin/ (admin).\n"
            f"The password is also saved in {password_file} (readable only by you); "
            f"change it with: {manage_command()} changepassword {USERNAME}\n"
        )
