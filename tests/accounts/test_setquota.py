"""python manage.py setquota USERNAME [--tokens-per-day N] [--usd-per-month X] [--max-tokens N]."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditEntry, User

LABEL = "manage.py setquota"


def setquota(*args: str) -> str:
    out = StringIO()
    call_command("setquota", *args, stdout=out)
    return out.getvalue()


def limits_of(user: User) -> tuple:
    user.refresh_from_db()
    return user.tokens_per_day, user.usd_per_month, user.max_tokens_per_request


def audit_trail() -> list[tuple]:
    return list(
        AuditEntry.objects.order_by("id").values_list("actor", "actor_label", "action", "user__username", "subject")
    )


def test_it_sets_every_limit_and_audits_each_change(alice):
    output = setquota("alice", "--tokens-per-day", "50000", "--usd-per-month", "7.50", "--max-tokens", "1024")

    assert limits_of(alice) == (50000, Decimal("7.50"), 1024)
    entries = {e.subject: (e.old_value, e.new_value) for e in AuditEntry.objects.all()}
    assert entries == {
        "tokens_per_day": ("", "50000"),
        "usd_per_month": ("", "7.50"),
        "max_tokens_per_request": ("", "1024"),
    }
    assert all(
        (actor, label, action, username) == (None, LABEL, AuditEntry.Action.LIMIT_CHANGED, "alice")
        for actor, label, action, username, _ in audit_trail()
    )
    assert "alice" in output
    assert "50000 tokens a day" in output
    assert "$7.50 a month" in output
    assert "max_tokens 1024" in output


def test_one_option_leaves_the_other_limits_alone(alice):
    alice.tokens_per_day, alice.usd_per_month = 50000, Decimal("7.50")
    alice.save()

    setquota("alice", "--max-tokens", "512")

    assert limits_of(alice) == (50000, Decimal("7.50"), 512)
    assert [entry[-1] for entry in audit_trail()] == ["max_tokens_per_request"]


def test_it_changes_an_existing_limit_and_records_the_old_value(alice):
    setquota("alice", "--tokens-per-day", "50000")

    setquota("alice", "--tokens-per-day", "20000")

    assert limits_of(alice)[0] == 20000
    newest = AuditEntry.objects.first()
    assert (newest.subject, newest.old_value, newest.new_value) == ("tokens_per_day", "50000", "20000")


def test_default_puts_a_limit_back_to_the_site_default(alice, settings):
    settings.QUOTA_TOKENS_PER_DAY = 100_000
    settings.QUOTA_USD_PER_MONTH = None
    setquota("alice", "--tokens-per-day", "50000", "--usd-per-month", "7.50")

    output = setquota("alice", "--tokens-per-day", "default", "--usd-per-month", "default")

    assert limits_of(alice) == (None, None, None)
    assert alice.limits().tokens_per_day == 100_000  # the site's default is in force again
    newest = {e.subject: (e.old_value, e.new_value) for e in AuditEntry.objects.all()[:2]}
    assert newest == {"tokens_per_day": ("50000", ""), "usd_per_month": ("7.50", "")}
    assert "100000 tokens a day" in output
    assert "unlimited a month" in output


def test_zero_tokens_a_day_blocks_and_zero_dollars_is_a_limit_too(alice):
    setquota("alice", "--tokens-per-day", "0", "--usd-per-month", "0")

    assert limits_of(alice) == (0, Decimal("0"), None)


def test_setting_the_same_value_again_changes_nothing_and_says_so(alice):
    setquota("alice", "--tokens-per-day", "50000")

    output = setquota("alice", "--tokens-per-day", "50000")

    assert AuditEntry.objects.count() == 1
    assert "nothing changed" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tokens-per-day", "-5"], "whole number"),
        (["--tokens-per-day", "abc"], "whole number"),
        (["--tokens-per-day", "1.5"], "whole number"),
        (["--tokens-per-day", ""], "whole number"),
        (["--max-tokens", "-1"], "whole number"),
        (["--max-tokens", "many"], "whole number"),
        (["--usd-per-month", "1.234"], "at most two decimals"),
        (["--usd-per-month", "-1"], "zero or more"),
        (["--usd-per-month", "abc"], "US dollars"),
        (["--usd-per-month", "NaN"], "zero or more"),
        (["--usd-per-month", "Infinity"], "zero or more"),
        # A good value beside a bad one is not half-applied.
        (["--tokens-per-day", "500", "--usd-per-month", "abc"], "US dollars"),
        ([], "nothing to set"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_bad_value_is_refused_with_the_reason_and_changes_nothing(alice, args, message):
    alice.tokens_per_day = 100
    alice.save()

    with pytest.raises(CommandError, match=message):
        setquota("alice", *args)

    assert limits_of(alice) == (100, None, None)
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--tokens-per-day", "99999999999999999999"],  # past what the column holds
        ["--max-tokens", "3000000000"],
        ["--usd-per-month", "10000000000"],
        ["--tokens-per-day", "²"],  # a digit to str.isdigit, not to int()
        ["--max-tokens", "0"],  # every call would ask the upstream for zero tokens and fail
    ],
    ids=lambda args: " ".join(args),
)
def test_a_value_the_site_cannot_use_is_refused_with_a_clear_message(alice, args):
    with pytest.raises(CommandError):
        setquota("alice", *args)

    assert limits_of(alice) == (None, None, None)
    assert not AuditEntry.objects.exists()


def test_an_unknown_user_is_refused(alice):
    with pytest.raises(CommandError, match="no user named 'mallory'"):
        setquota("mallory", "--tokens-per-day", "500")

    assert not AuditEntry.objects.exists()


def test_the_new_limit_is_what_the_user_gets(alice, settings):
    settings.QUOTA_TOKENS_PER_DAY = None
    settings.QUOTA_USD_PER_MONTH = Decimal("20")
    settings.QUOTA_MAX_TOKENS_PER_REQUEST = 4096

    setquota("alice", "--tokens-per-day", "1000", "--max-tokens", "256")

    limits = User.objects.get(pk=alice.pk).limits()
    assert (limits.tokens_per_day, limits.usd_per_month, limits.max_tokens_per_request) == (1000, Decimal("20"), 256)
