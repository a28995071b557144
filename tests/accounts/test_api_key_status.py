"""A key's status (active, expired, revoked) is one rule: what opens /v1, what the keys page and the admin show."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services import api_key_authenticate, api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


@pytest.fixture
def keys(alice) -> dict[str, str]:
    """The secret of one key in each state, by name."""
    _, active = api_key_create(user=alice, name="phone")
    _, expired = api_key_create(user=alice, name="old script", expires_at=timezone.now() - timedelta(seconds=1))
    lost, revoked = api_key_create(user=alice, name="lost laptop")
    api_key_revoke(key=lost)
    return {"phone": active, "old script": expired, "lost laptop": revoked}


@pytest.mark.parametrize(
    "status, names", [("active", ["phone"]), ("expired", ["old script"]), ("revoked", ["lost laptop"])]
)
def test_the_admin_filters_keys_by_status(admin_client, keys, status, names):
    page = admin_client.get("/admin/accounts/apikey/", {"status": status}).content.decode()

    assert [name for name in keys if f">{name}<" in page] == names


def test_the_key_of_a_deactivated_user_stops_working(alice, keys):
    alice.is_active = False
    alice.save()

    assert api_key_authenticate(secret=keys["phone"], ip="1.2.3.4") is None
