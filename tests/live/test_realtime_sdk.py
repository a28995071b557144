"""The official openai SDK mints Realtime client secrets through the site with a site key, unchanged."""

import openai
import pytest

from accounts.models import RealtimeSecret
from accounts.services import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key(alice, catalog):
    return api_key_create(user=alice, name="voice app")


@pytest.fixture
def sdk(live_site, key):
    return openai.OpenAI(base_url=f"{live_site}/v1", api_key=key[1], max_retries=0, timeout=15)


def test_the_sdk_gets_a_secret_for_a_voice_session(sdk, key, upstream, alice):
    secret = sdk.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60},
        session={"type": "realtime", "model": "gpt-realtime", "audio": {"output": {"voice": "marin"}}},
    )

    assert secret.value.startswith("ek_")
    assert secret.session.model == "gpt-realtime"
    row = RealtimeSecret.objects.get()
    assert (row.user, row.api_key, row.seconds) == (alice, key[0], 60)
    assert upstream.requests[0].headers["Authorization"] == "Bearer sk-upstream-secret"
    assert upstream.requests[0].json["session"]["audio"] == {"output": {"voice": "marin"}}


def test_the_sdk_raises_bad_request_naming_a_field_the_site_keeps(sdk, upstream):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.realtime.client_secrets.create(
            session={"type": "realtime", "tools": [{"type": "function", "name": "transfer_money"}]}
        )

    assert refused.value.param == "session.tools"
    assert upstream.requests == []
