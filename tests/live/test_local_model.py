"""The site under daphne in front of the real local model: llama.cpp's server with SmolLM2-135M."""

from decimal import Decimal

import httpx
import pytest

from accounts.models import UsageRecord
from conversations.models import ChatModel, Message
from tests.live.conftest import chat_start, login, reply_watch, site_env, stream_url
from tests.servers import local_model_kill, local_model_server, site_server

pytestmark = [pytest.mark.local_model, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def local_servers(django_db_setup, tmp_path_factory):
    """The site's base URL and the local model server's."""
    env = site_env(
        tmp_path_factory.mktemp("local-var"),
        OPENAI_API_KEY="local",
        DEFAULT_MODEL="smollm2-135m",
        # Short answers take a few dozen milliseconds: frame every token so the stream shows them arriving.
        STREAM_FRAME_INTERVAL="0.001",
    )
    with local_model_server() as model_url, site_server(env | {"OPENAI_BASE_URL": model_url}) as base_url:
        yield base_url, model_url


@pytest.fixture(scope="module")
def local_site(local_servers):
    return local_servers[0]


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


def server_usage(model_url: str, messages: list[dict], max_tokens: int) -> dict:
    """The usage the local model server itself reports for a request, not streamed."""
    body = {"model": "smollm2-135m", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{model_url}/chat/completions", json=body, timeout=60, trust_env=False).json()["usage"]


def test_a_replys_tokens_are_the_servers_own_count_not_an_estimate(local_servers, alice, catalog):
    local_site, model_url = local_servers
    ChatModel.objects.filter(model_id="smollm2-135m").update(enabled=True, max_output_tokens=24)
    client = login(local_site, alice)

    conversation_id, reply_id = chat_start(client, "Hi", model="smollm2-135m")
    reply_watch(client, stream_url(conversation_id, reply_id))
    long_id, long_reply_id = chat_start(client, "Write a long story about a cat and a dog.", model="smollm2-135m")
    reply_watch(client, stream_url(long_id, long_reply_id))

    hi, story = Message.objects.get(pk=reply_id), Message.objects.get(pk=long_reply_id)
    assert not hi.usage_estimated and not story.usage_estimated
    # "Hi" is 1 token; with the chat template (and SmolLM2's default system prompt) the server reads 31.
    assert hi.prompt_tokens == server_usage(model_url, [{"role": "user", "content": "Hi"}], 1)["prompt_tokens"]
    assert hi.prompt_tokens > 20
    assert 0 < hi.completion_tokens <= 24
    # Cut at max_tokens: exactly that many tokens were generated, and counted.
    assert (story.finish_reason, story.completion_tokens) == ("length", 24)
    ledger = UsageRecord.objects.get(message=story)
    assert (ledger.prompt_tokens, ledger.completion_tokens, ledger.estimated) == (story.prompt_tokens, 24, False)
    assert "(estimated)" not in client.get(f"/c/{long_id}/").text


@pytest.fixture
def embedded_site(django_db_setup, tmp_path):
    """The site as `make run` starts it, with no upstream configured: it talks to its own local model server."""
    with local_model_server() as model_url:
        port = model_url.removeprefix("http://127.0.0.1:").removesuffix("/v1")
        env = site_env(tmp_path, LOCAL_MODEL_PORT=port, DEFAULT_MODEL="smollm2-135m")
        env.pop("OPENAI_API_KEY")
        with site_server(env) as base_url:
            yield base_url, model_url


def test_healthz_and_the_chat_page_say_when_the_local_model_process_dies(embedded_site, alice, catalog):
    base_url, model_url = embedded_site
    client = login(base_url, alice)
    banner = "The local model is not running"
    healthy, page = client.get("/healthz"), client.get("/")

    local_model_kill(model_url)

    sick, page_after = client.get("/healthz"), client.get("/")
    assert (healthy.status_code, healthy.json()["local_model"]) == (200, "ok")
    assert banner not in page.text
    assert sick.status_code == 503
    assert sick.json() == {
        "status": "error",
        "database": "ok",
        "redis": "ok",
        "local_model": "error: ConnectionRefusedError",
    }
    assert banner in page_after.text
