"""The /v1 API at the HTTP level: limits, CORS, malformed requests (the SDK's view is in tests/live)."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.services import api_key_create
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def post(client: AsyncClient, secret: str, body=BODY, **headers):
    return client.post(
        URL, json.dumps(body) if not isinstance(body, bytes) else body, content_type="application/json",
        headers={"Authorization": f"Bearer {secret}", **headers},
    )  # fmt: skip


async def test_the_users_own_rate_limit_applies_to_the_api(secret, upstream, settings):
    settings.RATELIMIT_API = "2/h"  # fixed windows: an hour's cannot end in the middle of the test
    client = AsyncClient()

    answers = [await post(client, secret) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 429]
    error = answers[2].json()["error"]
    assert (error["code"], error["type"]) == ("rate_limit_exceeded", "requests")
    assert answers[2]["Retry-After"] == "3600"
    assert len(upstream.requests) == 2


async def test_the_per_address_limit_covers_all_keys(alice, bob, catalog, upstream, settings):
    settings.RATELIMIT_API_IP = "2/h"
    keys = [(await sync_to_async(api_key_create)(user=user, name="k"))[1] for user in (alice, bob, alice)]
    client = AsyncClient()

    statuses = [(await post(client, key)).status_code for key in keys]

    assert statuses == [200, 200, 429]


async def test_refused_keys_count_against_their_address(secret, upstream, settings):
    settings.RATELIMIT_API_IP = "3/h"
    client = AsyncClient()

    guesses = [await post(client, f"csk-guess-{n}") for n in range(3)]
    good_key_after = await post(client, secret)
    models_after = await client.get("/v1/models", headers={"Authorization": "Bearer csk-guess-3"})

    assert [guess.status_code for guess in guesses] == [401, 401, 401]
    assert guesses[0].json()["error"]["code"] == "invalid_api_key"
    for refused in (good_key_after, models_after):  # the address's window is full, whatever key it sends
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused["Retry-After"] == "3600"
    assert upstream.requests == []


async def test_while_a_call_streams_its_request_has_let_go_of_the_body_it_parsed_and_its_headers(secret, upstream):
    upstream.script(Reply(chunks=["a", "b"], first_delay=0.1))
    prompt = [{"role": "user", "content": f"turn {n}: " + "words " * 2000} for n in range(10)]  # 120 KB

    response = await post(AsyncClient(), secret, {**BODY, "messages": prompt, "stream": True})
    chunks = aiter(response.streaming_content)
    first = await anext(chunks)
    request = response.asgi_request
    held = "_body" in request.__dict__ or not request._stream.closed  # the prompt's bytes: as read, and spooled
    headers_held = [name for name in ("META", "headers", "COOKIES") if name in request.__dict__]  # the key among them
    rest = b"".join([chunk async for chunk in chunks])

    assert response.status_code == 200 and first.startswith(b"data: ") and rest.endswith(b"data: [DONE]\n\n")
    assert len(upstream.requests[-1].json["messages"]) == 10
    assert not held
    assert headers_held == []


async def test_a_browser_app_on_an_allowed_origin_may_call_the_api(secret, upstream, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]
    client = AsyncClient()

    preflight = await client.options(
        URL,
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    call = await post(client, secret, Origin="https://app.example.com")

    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    assert "POST" in preflight["Access-Control-Allow-Methods"]
    assert call.status_code == 200
    assert call["Access-Control-Allow-Origin"] == "https://app.example.com"


async def test_other_origins_get_no_cors_permission(secret, upstream, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.com"]

    preflight = await AsyncClient().options(
        URL, headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    )

    assert "Access-Control-Allow-Origin" not in preflight


async def test_a_body_that_is_not_json_is_a_clear_400(secret, upstream):
    response = await post(AsyncClient(), secret, body=b"{not json")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "We could not parse the JSON body of your request."


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "model"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "Hi"}]}, "messages[0].role"),
        (
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({**BODY, "stream_options": {"include_usage": True}}, "stream_options"),
        ({**BODY, "max_tokens": 0}, "max_tokens"),
        ({**BODY, "logit_bias": {"1": 5}}, "logit_bias"),
    ],
)
async def test_malformed_requests_name_the_offending_field(secret, upstream, body, param):
    response = await post(AsyncClient(), secret, body=body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


async def test_max_tokens_is_capped_by_the_users_limit(secret, alice, upstream):
    alice.max_tokens_per_request = 100
    await alice.asave()

    await post(AsyncClient(), secret, body={**BODY, "max_tokens": 5000})

    assert upstream.requests[0].json["max_tokens"] == 100


async def test_the_api_does_not_need_a_csrf_token(secret, upstream):
    client = AsyncClient(enforce_csrf_checks=True)

    response = await post(client, secret)

    assert response.status_code == 200


async def test_wrong_methods_get_an_openai_error(secret):
    response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 405
    assert "error" in response.json()


async def test_a_streamed_reply_is_openai_sse(secret, upstream):
    upstream.script(Reply(chunks=["a", "b"]))

    response = await post(AsyncClient(), secret, body={**BODY, "stream": True})
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()

    assert response["Content-Type"] == "text/event-stream"
    events = [line[6:] for line in body.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "ab"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
