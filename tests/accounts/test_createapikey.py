import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import API_KEY_SHOWN, ApiKey
from accounts.services import api_key_authenticate

ROOT = Path(__file__).resolve().parents[2]


def createapikey(*args) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("createapikey", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def test_it_prints_only_a_working_key_on_stdout(alice):
    stdout, stderr = createapikey("alice")

    secret = stdout.removesuffix("\n")
    assert "\n" not in secret and " " not in secret
    key = api_key_authenticate(secret=secret, ip="1.2.3.4")
    assert key is not None and key.user == alice
    assert key.expires_at is None
    assert not key.allowed_models.exists()
    # The details, for a person, are on stderr, which tells the key apart but does not hold it.
    assert f"{key.prefix}…" in stderr and "alice" in stderr and "never expires" in stderr
    assert secret[API_KEY_SHOWN:] not in stderr


def test_only_the_hash_is_stored(alice):
    secret = createapikey("alice")[0].strip()

    row = ApiKey.objects.values().get()
    assert not [column for column, value in row.items() if secret in str(value)]


def test_it_takes_a_name_and_an_expiry_in_days(alice):
    before = timezone.now()

    stdout, stderr = createapikey("alice", "--name", "nightly backup", "--expires-in-days", "30")

    key = api_key_authenticate(secret=stdout.strip(), ip="1.2.3.4")
    assert key.name == "nightly backup"
    assert before + timedelta(days=30) <= key.expires_at <= timezone.now() + timedelta(days=30)
    assert "“nightly backup”" in stderr and "expires " in stderr


def test_each_run_makes_a_new_key(alice):
    first, second = createapikey("alice")[0].strip(), createapikey("alice")[0].strip()

    assert first != second
    assert ApiKey.objects.filter(user=alice).count() == 2


def test_an_unknown_user_is_an_error_and_makes_no_key(alice):
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        createapikey("nobody")

    assert not ApiKey.objects.exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--expires-in-days", "0"], "--expires-in-days must be 1 or more"),
        (["--name", "  "], "the name must be 1 to 100 characters"),
        (["--name", "x" * 101], "the name must be 1 to 100 characters"),
    ],
    ids=["zero-days", "blank-name", "long-name"],
)
def test_it_refuses_bad_options_and_makes_no_key(alice, args, reason):
    with pytest.raises(CommandError, match=reason):
        createapikey("alice", *args)

    assert not ApiKey.objects.exists()


def test_it_warns_that_an_inactive_users_key_does_not_work(alice):
    alice.is_active = False
    alice.save(update_fields=["is_active"])

    stdout, stderr = createapikey("alice")

    assert "inactive" in stderr
    assert api_key_authenticate(secret=stdout.strip(), ip="1.2.3.4") is None


@pytest.mark.django_db(transaction=True)
def test_a_script_can_capture_the_key_from_the_command_line(alice):
    """KEY=$(python manage.py createapikey alice): stdout is the key and nothing else."""
    if connection.vendor != "postgresql":
        pytest.skip("the command's own process needs the test database on a server")
    database = connection.settings_dict
    password = quote(database["PASSWORD"], safe="")
    url = f"postgres://{database['USER']}:{password}@{database['HOST']}:{database['PORT']}/{database['NAME']}"

    result = subprocess.run(
        [sys.executable, "manage.py", "createapikey", "alice", "--name", "ci"],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    key = result.stdout.removesuffix("\n")
    assert api_key_authenticate(secret=key, ip="1.2.3.4") == ApiKey.objects.get(name="ci")
    assert result.stderr
