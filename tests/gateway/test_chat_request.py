"""What of a Chat Completions body reaches the provider: declared fields to every depth, nothing else.

The requests go through the site's /v1 view; the fake upstream's log shows what was forwarded.
"""

import json

import pytest
from django.test import AsyncClient

from accounts.models import Reservation
from accounts.services import api_key_create
from conversations.models import ChatModel
from tests.accounts.test_image_tokens import data_url, png

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hi"}]
BODY = {"model": "gpt-4o-mini", "messages": HI}
FUNCTION = {"name": "weather", "description": "The weather", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
def secret(alice, catalog):
    return api_key_create(user=alice, name="app")[1]


async def post(secret: str, body) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await AsyncClient().post(
        URL, raw, content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )


def image(url: str, detail: str = "auto") -> list[dict]:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    ]
    return [{"role": "user", "content": parts}]


@pytest.mark.parametrize(
    "body, path",
    [
        ({**BODY, "tools": [{"type": "function", "function": {**FUNCTION, "x": 1}}]}, "tools[0].function.x"),
        ({**BODY, "tools": [{"type": "function", "function": FUNCTION, "x": 1}]}, "tools[0].x"),
        (
            {**BODY, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}, "x": 1}}},
            "response_format.json_schema.x",
        ),
        ({**BODY, "response_format": {"type": "json_object", "x": 1}}, "response_format.x"),
        (
            {**BODY, "tool_choice": {"type": "function", "function": {"name": "weather", "x": 1}}},
            "tool_choice.function.x",
        ),
        (
            {**BODY, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "x": 1}]}]},
            "messages[0].content[0].x",
        ),
        (
            {
                **BODY,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://a.test/b.png", "x": 1}}],
                    }
                ],
            },
            "messages[0].content[0].image_url.x",
        ),
        (
            {
                **BODY,
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}", "x": 1}}
                        ],
                    }
                ],
            },
            "messages[0].tool_calls[0].function.x",
        ),
        ({**BODY, "stream": True, "stream_options": {"include_usage": True, "x": 1}}, "stream_options.x"),
        ({**BODY, "messages": [{"role": "user", "content": "Hi", "x": 1}]}, "messages[0].x"),
        ({**BODY, "x": 1}, "x"),
    ],
)
async def test_an_unknown_key_at_any_depth_is_refused_by_its_path(secret, upstream, body, path):
    response = await post(secret, body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == f"Unrecognized request argument supplied: {path}"
    assert (error["param"], error["code"]) == (path, "unknown_parameter")
    assert upstream.requests == []


@pytest.mark.parametrize(
    "body, param",
    [
        ({**BODY, "n": True}, "n"),
        ({**BODY, "n": 1.0}, "n"),
        ({**BODY, "n": 2}, "n"),
        ({**BODY, "messages": [{"role": ["user"], "content": "Hi"}]}, "messages[0].role"),
        ({**BODY, "messages": [{"role": {"user": 1}, "content": "Hi"}]}, "messages[0].role"),
        ({**BODY, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({**BODY, "messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
        ({**BODY, "model": "gpt-4o-mini\x00"}, "model"),
        ({**BODY, "temperature": "1"}, "temperature"),
        ({**BODY, "top_logprobs": 3}, "top_logprobs"),
        ({**BODY, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({**BODY, "reasoning_effort": "extreme"}, "reasoning_effort"),
        (
            {**BODY, "tools": [{"type": "function", "function": {**FUNCTION, "name": "no spaces"}}]},
            "tools[0].function.name",
        ),
        ({**BODY, "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        (
            {**BODY, "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
        ),
        ({**BODY, "prediction": {"type": "content", "content": "Hi"}}, "prediction"),
        ({**BODY, "web_search_options": {}}, "web_search_options"),
        ({**BODY, "audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({**BODY, "messages": image("http://a.test/b.png")}, "messages[0].content[1].image_url.url"),
        ({**BODY, "messages": image("data:image/svg+xml;base64,PHN2Zz4=")}, "messages[0].content[1].image_url.url"),
        ({**BODY, "messages": image("data:image/png;base64,not base64!")}, "messages[0].content[1].image_url.url"),
        (
            {**BODY, "messages": image("https://a.test/b.png", detail="original")},
            "messages[0].content[1].image_url.detail",
        ),
    ],
)
async def test_a_wrong_value_at_any_depth_is_a_400_naming_it(secret, upstream, body, param):
    response = await post(secret, body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "top_p": Infinity}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 1e400}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "seed": ' + b"9" * 5000 + b"}",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "x": ' + b"[" * 50_000 + b"}",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "metadata": '
        + b'{"a": ' * 100
        + b"1"
        + b"}" * 101,
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff"}]}',
    ],
)
async def test_json_that_only_python_accepts_is_refused(secret, upstream, raw):
    response = await post(secret, raw)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


async def test_non_finite_numbers_deep_inside_a_tool_schema_are_refused(secret, upstream):
    parameters = b'{"type": "object", "properties": {"n": {"type": "number", "maximum": Infinity}}}'
    raw = json.dumps({**BODY, "tools": [{"type": "function", "function": {"name": "f", "parameters": "P"}}]})

    response = await post(secret, raw.replace('"P"', parameters.decode()).encode())

    assert response.status_code == 400
    assert upstream.requests == []


async def test_the_fields_clients_send_reach_the_provider_as_sent(secret, upstream):
    options = {
        "reasoning_effort": "low",
        "verbosity": "low",
        "logprobs": True,
        "top_logprobs": 3,
        "seed": 42,
        "modalities": ["text"],
        "parallel_tool_calls": False,
        "stop": ["END"],
        "n": 1,
        "tools": [{"type": "function", "function": {**FUNCTION, "strict": True}}],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "weather"}}]},
        },
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
        },
    }

    response = await post(secret, {**BODY, **options, "user": "u-1", "metadata": {"a": "b"}, "temperature": None})

    assert response.status_code == 200
    forwarded = upstream.requests[0].json
    assert {name: forwarded.get(name) for name in options} == options
    # OpenAI's own bookkeeping stays here; a null is an option left unset.
    assert not {"user", "metadata", "temperature"} & set(forwarded)


@pytest.mark.parametrize("sent", ["max_tokens", "max_completion_tokens"])
async def test_the_token_limit_goes_under_the_name_the_model_takes(secret, upstream, sent):
    await ChatModel.objects.filter(model_id="gpt-4o").aupdate(token_limit_param="max_completion_tokens")

    await post(secret, {**BODY, sent: 50})
    await post(secret, {**BODY, "model": "gpt-4o", sent: 50})

    mini, reasoning = (request.json for request in upstream.requests)
    assert (mini.get("max_tokens"), "max_completion_tokens" in mini) == (50, False)
    assert (reasoning.get("max_completion_tokens"), "max_tokens" in reasoning) == (50, False)


async def test_an_image_reaches_a_model_that_accepts_images_unchanged(secret, upstream):
    messages = image(data_url("png", png(640, 480)), detail="high") + image("https://a.test/cat.jpg", detail="low")

    response = await post(secret, {**BODY, "messages": messages})

    assert response.status_code == 200
    assert upstream.requests[0].json["messages"] == messages


async def test_a_model_that_takes_no_images_refuses_them_clearly(secret, upstream):
    await ChatModel.objects.filter(model_id="gpt-4o-mini").aupdate(accepts_images=False)

    response = await post(secret, {**BODY, "messages": HI + image("https://a.test/cat.jpg")})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages[1].content[1]", "images_not_supported")
    assert "does not accept images" in error["message"]
    assert upstream.requests == []
    assert not await Reservation.objects.aexists()


async def test_images_count_against_the_budget_by_the_models_image_rule(secret, alice, upstream):
    # gpt-4o-mini's images: 2,833 tokens at low detail, up to 2,833 + 8 x 5,667 at high of unknown size.
    alice.tokens_per_day = 20_000
    await alice.asave()
    low = {**BODY, "messages": image("https://a.test/cat.jpg", "low"), "max_tokens": 100}
    high = {**BODY, "messages": image("https://a.test/cat.jpg", "high"), "max_tokens": 100}
    # A large image whose size is read from its data: 512x512 is one tile. (The fake takes bodies up to 1 MB.)
    small_but_heavy = {**BODY, "messages": image(data_url("png", png(512, 512) + bytes(500_000)), "high")}

    assert (await post(secret, low)).status_code == 200
    refused = await post(secret, high)
    assert (await post(secret, small_but_heavy | {"max_tokens": 100})).status_code == 200

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert len(upstream.requests) == 2


async def test_a_body_over_the_sites_limit_is_a_413_in_openais_format(secret, upstream, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000

    response = await post(secret, {**BODY, "messages": image(data_url("png", png(64, 64) + bytes(100_000)))})

    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
    assert "https URL" in error["message"]
    assert upstream.requests == []
