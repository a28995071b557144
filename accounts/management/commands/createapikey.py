from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_create

NAME_MAX = ApiKey._meta.get_field("name").max_length


class Command(BaseCommand):
    help = (
        "Create an API key for a user. Only the key goes to stdout, so a script can capture it: "
        "KEY=$(python manage.py createapikey alice). It is shown this once; only its hash is kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="manage.py createapikey", help="What the key is for.")
        parser.add_argument("--expires-in-days", type=int, help="Days until the key stops working; default never.")

    def handle(self, *args, username, name, expires_in_days, **options):
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        name = name.strip()
        if not name or len(name) > NAME_MAX:
            raise CommandError(f"the name must be 1 to {NAME_MAX} characters")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be 1 or more")
        expires_at = None if expires_in_days is None else timezone.now() + timedelta(days=expires_in_days)

        key, secret = api_key_create(user=user, name=name, expires_at=expires_at)

        expiry = f"expires {timezone.localtime(expires_at):%Y-%m-%d %H:%M %Z}" if expires_at else "never expires"
        self.stderr.write(
            f"API key “{key.name}” ({key.prefix}…) for {username}, {expiry}. It is not shown again.",
            style_func=self.style.SUCCESS,
        )
        if not user.is_active:
            self.stderr.write(
                f"Warning: {username} is inactive, so the key does not work until they are reactivated.",
                style_func=self.style.WARNING,
            )
        self.stdout.write(secret)
