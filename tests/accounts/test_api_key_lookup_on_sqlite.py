"""The embedded default (SQLite) looks API keys up as PostgreSQL does: the lookup is written out (accounts/rows.py),
and SQLite's dates and booleans come back as the ORM would give them."""

import json
from pathlib import Path

from tests.accounts.test_ledger_on_sqlite import manage_ok

SCRIPT = """
import json
from datetime import timedelta
from django.utils import timezone
from accounts.models import ApiKey, User
from accounts.services import api_key_authenticate, api_key_create, api_key_revoke

ada = User.objects.create(username="ada", tokens_per_day=2_000, usd_per_month="1.50")
key, secret = api_key_create(user=ada, name="app")
found = api_key_authenticate(secret=secret, ip="10.0.0.1")
again = api_key_authenticate(secret=secret, ip="10.0.0.1")  # within the minute: compares stored times
stored = ApiKey.objects.get(pk=key.pk)
expiring, expiring_secret = api_key_create(user=ada, name="old")
ApiKey.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
bob = User.objects.create(username="bob", is_active=False)
_, bobs_secret = api_key_create(user=bob, name="app")
revoked, revoked_secret = api_key_create(user=ada, name="gone")
api_key_revoke(key=revoked)
print(json.dumps({
    "found": [found.pk, found.user.username, found.user.is_active, str(found.user.usd_per_month)],
    "limits": found.user.limits().tokens_per_day,
    "aware": timezone.is_aware(again.last_used_at) and again.last_used_at == stored.last_used_at,
    "ip": again.last_used_ip,
    "refused": [api_key_authenticate(secret=s, ip="") is None for s in (expiring_secret, bobs_secret, revoked_secret)],
    "expected_pk": key.pk,
}))
"""


def test_a_key_is_found_with_its_user_and_refused_when_expired_revoked_or_its_user_inactive(tmp_path: Path):
    manage_ok(tmp_path, "migrate", "--verbosity", "0")

    seen = json.loads(manage_ok(tmp_path, "shell", "--no-imports", "--command", SCRIPT).splitlines()[-1])

    assert seen["found"] == [seen["expected_pk"], "ada", True, "1.50"]
    assert seen["limits"] == 2_000
    assert seen["aware"] is True
    assert seen["ip"] == "10.0.0.1"
    assert seen["refused"] == [True, True, True]
