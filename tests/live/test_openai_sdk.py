"""The official openai SDK, pointed at the site, works unchanged with a site key and raises the right exceptions."""

import asyncio
import time
from datetime import timedelta

import openai
import pytest
from django.utils import timezone

from accounts.models import Reservation, UsageRecord
from accounts.services import api_key_create, api_key_revoke
from conversations.models import ChatModel
from tests.fake_upstream import Refuse, Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Hi there"}]


@pytest.fixture
def key(alice, catalog):
    return api_key_create(user=alice, name="phone app")


@pytest.fixture
def sdk(live_site, key):
    _, secret = key
    return openai.OpenAI(base_url=f"{live_site}/v1", api_key=secret, max_retries=0, timeout=15)


def test_a_reply_comes_back_and_is_recorded_against_the_user_and_key(sdk, key, upstream, alice):
    upstream.script(Reply(text="Hello, app.", prompt_tokens=12, completion_tokens=4))

    completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert completion.choices[0].message.content == "Hello, app."
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 4)
    record = UsageRecord.objects.get()
    assert (record.user, record.api_key, record.kind) == (alice, key[0], "api")
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (12, 4, False)
    assert record.cost == ChatModel.objects.get(model_id="gpt-4o-mini").cost(prompt_tokens=12, completion_tokens=4)
    assert not Reservation.objects.exists()
    # The provider key went upstream, never the app's key.
    assert upstream.requests[0].headers["Authorization"] == "Bearer sk-upstream-secret"


def test_a_streamed_reply_arrives_in_pieces_with_usage_when_asked(sdk, upstream):
    upstream.script(Reply(chunks=["One ", "two ", "three"], prompt_tokens=5, completion_tokens=3))

    stream = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "One two three"
    assert chunks[-1].usage.completion_tokens == 3
    assert UsageRecord.objects.get().completion_tokens == 3


def test_without_include_usage_every_chunk_has_a_choice(sdk, upstream):
    upstream.script(Reply(chunks=["a", "b"]))

    chunks = list(sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True))

    # Code written against OpenAI reads chunk.choices[0] on every chunk; the site keeps that working.
    assert all(chunk.choices for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "ab"
    assert UsageRecord.objects.get().completion_tokens == 2  # still accounted: usage was asked upstream


def test_the_async_client_streams_too(live_site, key, upstream):
    upstream.script(Reply(chunks=["x", "y", "z"]))

    async def run():
        client = openai.AsyncOpenAI(base_url=f"{live_site}/v1", api_key=key[1], max_retries=0, timeout=15)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

    assert asyncio.run(run()) == "xyz"


def test_content_parts_and_options_are_forwarded_and_bookkeeping_fields_dropped(sdk, upstream):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}],
        max_completion_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        seed=7,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        user="end-user-42",
    )

    sent = upstream.requests[0].json
    assert sent["messages"][0]["content"] == [{"type": "text", "text": "Weather?"}]
    assert sent["max_tokens"] == 50
    assert (sent["temperature"], sent["top_p"], sent["stop"], sent["seed"]) == (0.2, 0.9, ["END"], 7)
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert "user" not in sent


def test_models_lists_what_the_key_may_use(sdk, live_site, alice, catalog):
    assert {model.id for model in sdk.models.list()} == {"gpt-4o-mini", "gpt-4o"}

    narrow, secret = api_key_create(user=alice, name="mini only")
    narrow.allowed_models.set([ChatModel.objects.get(model_id="gpt-4o-mini")])
    client = openai.OpenAI(base_url=f"{live_site}/v1", api_key=secret, max_retries=0)
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini"]
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt-4o", messages=HI)
    assert refused.value.code == "model_not_found"


@pytest.mark.parametrize("bad_key", ["csk-not-a-real-key", "sk-upstream-secret", ""])
def test_a_wrong_key_is_an_authentication_error(live_site, catalog, bad_key, upstream):
    client = openai.OpenAI(base_url=f"{live_site}/v1", api_key=bad_key or "x", max_retries=0)

    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    assert upstream.requests == []


def test_revoked_and_expired_keys_stop_working(sdk, key, upstream):
    row, _ = key
    api_key_revoke(key=row)
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()

    row.revoked_at = None
    row.expires_at = timezone.now() - timedelta(seconds=1)
    row.save()
    with pytest.raises(openai.AuthenticationError):
        sdk.models.list()


def test_the_upstreams_rate_limit_is_a_rate_limit_error_with_retry_after(sdk, upstream):
    upstream.script(Status(429, retry_after=600))

    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["Retry-After"] == "600"
    assert not Reservation.objects.exists()


def test_a_used_up_quota_is_insufficient_quota(sdk, alice, upstream):
    alice.tokens_per_day = 10
    alice.save()

    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert limited.value.code == "insufficient_quota"
    assert "tokens for today" in limited.value.message
    assert upstream.requests == []


def test_too_long_a_prompt_is_context_length_exceeded(sdk, upstream):
    upstream.script(Status.context_length_exceeded())

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert refused.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"extra_body": {"frobnicate": True}}, "Unrecognized request argument supplied: frobnicate"),
        ({"temperature": 7}, "'temperature' must be a number from 0 to 2"),
        ({"n": 3}, "Only n=1"),
    ],
)
def test_invalid_requests_are_bad_request_errors(sdk, upstream, extra, words):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, **extra)

    assert words in refused.value.message
    assert upstream.requests == []


def test_an_unknown_model_is_not_found(sdk, upstream):
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.chat.completions.create(model="gpt-9", messages=HI)

    assert refused.value.code == "model_not_found"


def test_a_failing_upstream_is_a_server_error(sdk, upstream):
    upstream.script(Status.server_error(503))  # passed through as the provider said it, and not retried here
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert failed.value.status_code == 503

    upstream.script(Refuse())
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert failed.value.status_code == 502
    assert not Reservation.objects.exists()


def test_a_client_that_disconnects_mid_stream_cancels_the_upstream_call_and_is_settled(sdk, upstream):
    upstream.script(Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))

    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
    received = [next(stream) for _ in range(4)]
    stream.close()

    upstream.wait_for_disconnects(1, timeout=10)
    assert upstream.requests[0].chunks_sent < 100
    for _ in range(100):  # settling happens as the server notices the disconnect
        if UsageRecord.objects.exists():
            break
        time.sleep(0.05)
    record = UsageRecord.objects.get()
    assert record.estimated
    assert 0 < record.completion_tokens < 100
    assert not Reservation.objects.exists()
    assert received
