"""POST /v1/responses at the HTTP level: what reaches the provider, what is refused, the stream's events.

The official SDK's view of the same endpoint is in tests/live/test_openai_sdk_responses.py.
"""

import json

import pytest
from django.test import AsyncClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.models import Reservation, UsageRecord
from conversations.models import ChatModel
from gateway.chat_request import InvalidRequest
from gateway.responses_request import responses_request_parse
from tests.fake_upstream import Reply, Status

URL = "/v1/responses"
BODY = {"model": "gpt-4o-mini", "input": "Hi"}
WEATHER = {"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}


def post(secret: str, body) -> object:
    return AsyncClient().post(
        URL, json.dumps(body), content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )


def sse(content: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event."""
    events = []
    for block in content.decode().split("\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.django_db(transaction=True)
async def test_the_request_reaches_the_provider_as_chat_completions(secret, upstream):
    await post(
        secret,
        {
            "model": "gpt-4o-mini",
            "instructions": "Be brief.",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Weather in Oslo?"},
                        {"type": "input_image", "image_url": "https://example.com/sky.png", "detail": "low"},
                    ],
                },
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "Rain, 4 °C"},
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": True}},
            "reasoning": {"effort": "low"},
            "max_output_tokens": 300,
            "temperature": 0.5,
            "parallel_tool_calls": False,
            "metadata": {"trace": "x"},
            "store": False,
        },
    )

    sent = upstream.requests[0].json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Oslo?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 4 °C"},
    ]
    assert sent["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": WEATHER["parameters"]}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    }
    assert (sent["reasoning_effort"], sent["max_tokens"], sent["temperature"]) == ("low", 300, 0.5)
    assert sent["parallel_tool_calls"] is False
    assert not {"metadata", "store", "input", "instructions", "text", "reasoning"} & set(sent)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "extra, param",
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"background": True}, "background"),
        ({"store": True}, "store"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{**WEATHER, "cache": True}]}, "tools[0].cache"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x/y.png"}]}]},
         "input[0].content[0].image_url"),
        ({"input": [{"role": "wizard", "content": "Hi"}]}, "input[0].role"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"text": {"format": {"type": "json_schema", "name": "w", "schema": {}, "extra": 1}}}, "text.format.extra"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice.type"),
        ({"temperature": float("nan")}, None),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)  # fmt: skip
async def test_what_cannot_be_honoured_is_a_400_naming_the_field(secret, upstream, extra, param):
    response = await post(secret, {**BODY, **extra})

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


@pytest.mark.django_db(transaction=True)
async def test_a_streamed_response_is_told_in_typed_events_with_sequence_numbers(secret, upstream):
    upstream.script(
        Reply(chunks=["Let me ", "check."], tool_calls=[{"name": "weather", "arguments": '{"city":"Oslo"}'}])
    )

    response = await post(secret, {**BODY, "stream": True})
    events = sse(b"".join([chunk async for chunk in response.streaming_content]))

    assert response["Content-Type"] == "text/event-stream"
    assert [name for name, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["type"] for _, data in events] == [name for name, _ in events]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    completed = events[-1][1]["response"]
    message, call = completed["output"]
    assert message["content"][0]["text"] == "Let me check."
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "weather", '{"city":"Oslo"}')
    assert events[13][1]["output_index"] == 1
    assert completed["usage"]["output_tokens"] == 2
    assert await UsageRecord.objects.filter(completion_tokens=2).aexists()
    assert not await Reservation.objects.aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_reply_cut_by_max_output_tokens_is_incomplete(secret, upstream):
    upstream.script(Reply(chunks=["a", "b"], finish_reason="length"))

    response = await post(secret, {**BODY, "stream": True, "max_output_tokens": 2})
    events = sse(b"".join([chunk async for chunk in response.streaming_content]))

    name, data = events[-1]
    assert name == "response.incomplete"
    assert data["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.django_db(transaction=True)
async def test_a_provider_failing_mid_stream_ends_it_with_response_failed_and_is_billed(secret, upstream):
    upstream.script(Reply(chunks=["a", "b", "c"], error_after=2))

    response = await post(secret, {**BODY, "stream": True})
    events = sse(b"".join([chunk async for chunk in response.streaming_content]))

    name, data = events[-1]
    assert name == "response.failed"
    assert data["response"]["status"] == "failed"
    assert data["response"]["error"]["code"] == "server_error"
    assert data["response"]["output"][0]["content"][0]["text"] == "ab"
    record = await UsageRecord.objects.aget()
    assert record.estimated and record.completion_tokens > 0
    assert not await Reservation.objects.aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_provider_refusing_before_the_stream_is_an_openai_error(secret, upstream):
    upstream.script(Status.context_length_exceeded())

    response = await post(secret, {**BODY, "stream": True})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert not await UsageRecord.objects.aexists()
    assert not await Reservation.objects.aexists()


@pytest.mark.django_db(transaction=True)
async def test_the_users_rate_limit_applies(secret, upstream, settings):
    settings.RATELIMIT_API = "1/h"

    answers = [await post(secret, BODY) for _ in range(2)]

    assert [a.status_code for a in answers] == [200, 429]
    assert answers[1].json()["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.django_db(transaction=True)
async def test_a_wrong_method_and_a_missing_key_are_openai_errors(upstream):
    wrong_method = await AsyncClient().get(URL)
    no_key = await AsyncClient().post(URL, json.dumps(BODY), content_type="application/json")

    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"


JSON = st.recursive(
    # What json.loads lets through body_checked: NaN and Infinity are refused before this.
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["model", "input", "instructions", "tools", "tool_choice", "text", "reasoning", "stream", "stream_options",
     "max_output_tokens", "temperature", "top_p", "store", "truncation", "metadata", "parallel_tool_calls"]
)  # fmt: skip
ITEMS = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning"]) | JSON},
    optional={"role": st.sampled_from(["user", "assistant", "tool"]) | JSON, "content": JSON, "call_id": JSON,
              "name": JSON, "arguments": JSON, "output": JSON},
)  # fmt: skip
BODIES = st.dictionaries(FIELDS, JSON, max_size=6).map(lambda body: {"model": "m", "input": "x", **body}) | st.builds(
    lambda items, extra: {"model": "m", "input": items, **extra},
    st.lists(ITEMS, max_size=4),
    st.dictionaries(FIELDS.filter(lambda name: name not in ("model", "input")), JSON, max_size=3),
)


@hypothesis_settings(max_examples=2000, deadline=None)
@given(BODIES)
def test_any_body_is_either_translated_or_refused_with_a_named_reason(body):
    try:
        asked = responses_request_parse(body)
    except InvalidRequest as refused:
        assert refused.message
        return
    # What goes upstream is JSON (no NaN), and holds only Chat Completions fields the site knows.
    json.dumps(asked.messages, allow_nan=False)
    json.dumps(asked.chat_options, allow_nan=False)
    known = {"temperature", "top_p", "parallel_tool_calls", "tools", "tool_choice", "response_format",
             "verbosity", "reasoning_effort"}  # fmt: skip
    assert set(asked.chat_options) <= known
    assert all(message["role"] in {"system", "developer", "user", "assistant", "tool"} for message in asked.messages)


@pytest.mark.django_db(transaction=True)
async def test_an_image_for_a_model_that_takes_none_is_refused_by_name(secret, upstream):
    await ChatModel.objects.filter(model_id="gpt-4o").aupdate(accepts_images=False)
    image = {"type": "input_image", "image_url": "https://example.com/sky.png"}

    response = await post(secret, {"model": "gpt-4o", "input": [{"role": "user", "content": [image]}]})

    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "images_not_supported",
        "input[0].content[0]",
    )
    assert upstream.requests == []


RAW_BODIES = [
    b"{not json",
    b'{"model": "gpt-4o-mini", "input": "Hi", "temperature": NaN}',
    b'{"model": "gpt-4o-mini\\u0000", "input": "Hi"}',
    b'{"model": "gpt-4o-mini", "input": "\\ud800"}',
    b'{"model": "gpt-4o-mini", "input": [{"role": ["user"], "content": "Hi"}]}',
    b'{"model": "gpt-4o-mini", "input": "Hi", "tools": [{"type": "function", "name": "f", "parameters": '
    + b'{"a": ' * 900
    + b"1"
    + b"}" * 901
    + b"]}",
    b"[" * 50_000,
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", [URL, "/v1/embeddings"])
@pytest.mark.parametrize("raw", RAW_BODIES, ids=range(len(RAW_BODIES)))
async def test_bodies_that_broke_chat_completions_are_a_clear_400_here_too(secret, upstream, url, raw):
    response = await AsyncClient().post(
        url, raw, content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert upstream.requests == []
    assert not await Reservation.objects.aexists()
