"""The site under daphne in front of the real local model: llama.cpp's server with SmolLM2-135M."""

from decimal import Decimal

import pytest

from conversations.models import ChatModel, Message
from tests.live.conftest import chat_start, login, reply_watch, site_env, stream_url
from tests.servers import local_model_server, site_server

pytestmark = [pytest.mark.local_model, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def local_site(django_db_setup, tmp_path_factory):
    env = site_env(
        tmp_path_factory.mktemp("local-var"),
        OPENAI_API_KEY="local",
        DEFAULT_MODEL="smollm2-135m",
        # Short answers take a few dozen milliseconds: frame every token so the stream shows them arriving.
        STREAM_FRAME_INTERVAL="0.001",
    )
    with local_model_server() as model_url, site_server(env | {"OPENAI_BASE_URL": model_url}) as base_url:
        yield base_url


def test_the_local_model_streams_a_reply_and_it_is_accounted_for(local_site, alice, catalog):
    # The catalog was seeded for a remote upstream, which leaves the local model off.
    ChatModel.objects.filter(model_id="smollm2-135m").update(enabled=True, max_output_tokens=64)
    client = login(local_site, alice)

    conversation_id, reply_id = chat_start(client, "What is 2+2? Answer briefly.", model="smollm2-135m")
    deltas, status = reply_watch(client, stream_url(conversation_id, reply_id))

    reply = Message.objects.select_related("model").get(pk=reply_id)
    assert status == "complete", reply.error_text
    assert len(deltas) > 1
    assert "".join(text for _, text, _ in deltas) == reply.content
    assert reply.content.strip()
    assert reply.model.model_id == "smollm2-135m"
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.completion_tokens <= 64 or reply.usage_estimated
    assert reply.cost == Decimal(0)
    # llama.cpp's server may send no usage in a stream; then the page must say the figures are estimates.
    chat_page = client.get(f"/c/{conversation_id}/")
    assert ("(estimated)" in chat_page.text) == reply.usage_estimated
