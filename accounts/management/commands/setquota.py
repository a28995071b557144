from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.services import limits_set

CLEAR = "default"


def whole_number(raw: str, *, smallest: int, largest: int) -> int | None:
    if raw == CLEAR:
        return None
    if not (raw.isascii() and raw.isdigit()) or not smallest <= int(raw) <= largest:
        raise CommandError(
            f"expected a whole number of tokens from {smallest} to {largest:,}, or '{CLEAR}', not {raw!r}"
        )
    return int(raw)


# What the database columns hold.
LARGEST_TOKENS = 2**63 - 1
LARGEST_MAX_TOKENS = 2**31 - 1
LARGEST_DOLLARS = Decimal("9999999999.99")


def dollars(raw: str) -> Decimal | None:
    if raw == CLEAR:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise CommandError(f"expected an amount in US dollars such as 25 or 7.50, or '{CLEAR}', not {raw!r}") from None
    if not value.is_finite() or not 0 <= value <= LARGEST_DOLLARS or value != value.quantize(Decimal("0.01")):
        raise CommandError(
            f"expected zero or more dollars (at most {LARGEST_DOLLARS:,}) with at most two decimals, not {raw!r}"
        )
    return value


class Command(BaseCommand):
    help = f"Set a user's limits, audited like changes in the admin. '{CLEAR}' puts a limit back to the site's default."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--tokens-per-hour", type=str)
        parser.add_argument("--tokens-per-day", type=str)
        parser.add_argument("--usd-per-month", type=str)
        parser.add_argument("--max-tokens", type=str)

    def handle(self, *args, username, tokens_per_hour, tokens_per_day, usd_per_month, max_tokens, **options):
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        values = {}
        if tokens_per_hour is not None:
            values["tokens_per_hour"] = whole_number(tokens_per_hour, smallest=0, largest=LARGEST_TOKENS)
        if tokens_per_day is not None:
            values["tokens_per_day"] = whole_number(tokens_per_day, smallest=0, largest=LARGEST_TOKENS)
        if usd_per_month is not None:
            values["usd_per_month"] = dollars(usd_per_month)
        if max_tokens is not None:
            values["max_tokens_per_request"] = whole_number(max_tokens, smallest=1, largest=LARGEST_MAX_TOKENS)
        if not values:
            raise CommandError(
                "nothing to set: give --tokens-per-hour, --tokens-per-day, --usd-per-month or --max-tokens"
            )
        changed = limits_set(user=user, actor=None, actor_label="manage.py setquota", **values)
        limits = User.objects.get(pk=user.pk).limits()
        self.stdout.write(
            f"{username}: {'changed ' + ', '.join(changed) if changed else 'nothing changed'}. In force: "
            f"{limits.tokens_per_hour or 'unlimited'} tokens an hour, "
            f"{limits.tokens_per_day or 'unlimited'} tokens a day, "
            f"{'$' + str(limits.usd_per_month) if limits.usd_per_month is not None else 'unlimited'} a month, "
            f"max_tokens {limits.max_tokens_per_request or 'as the model allows'}."
        )
