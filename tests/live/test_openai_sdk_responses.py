"""The official openai SDK's Responses API, pointed at the site, works unchanged on any catalog model."""

import json
import time

import openai
import pytest
from pydantic import BaseModel

from accounts.models import Reservation, UsageRecord
from accounts.services import api_key_create
from conversations.models import ChatModel
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


@pytest.fixture
def key(alice, catalog):
    return api_key_create(user=alice, name="agent")


@pytest.fixture
def sdk(live_site, key):
    return openai.OpenAI(base_url=f"{live_site}/v1", api_key=key[1], max_retries=0, timeout=15)


def test_a_response_has_output_text_and_usage_and_is_recorded(sdk, key, upstream, alice):
    upstream.script(Reply(text="Hello, agent.", prompt_tokens=12, completion_tokens=4))

    response = sdk.responses.create(model="gpt-4o-mini", instructions="Be kind.", input="Hi there")

    assert response.output_text == "Hello, agent."
    assert (response.status, response.model) == ("completed", "gpt-4o-mini")
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (12, 4, 16)
    assert upstream.requests[0].json["messages"] == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi there"},
    ]
    record = UsageRecord.objects.get()
    assert (record.user, record.api_key, record.kind) == (alice, key[0], "api")
    assert (record.prompt_tokens, record.completion_tokens, record.estimated) == (12, 4, False)
    assert record.cost == ChatModel.objects.get(model_id="gpt-4o-mini").cost(prompt_tokens=12, completion_tokens=4)
    assert not Reservation.objects.exists()


def test_a_streamed_response_arrives_as_typed_events(sdk, upstream):
    upstream.script(Reply(chunks=["One ", "two ", "three"], prompt_tokens=5, completion_tokens=3))

    events = list(sdk.responses.create(model="gpt-4o-mini", input="Count", stream=True))

    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "One two three"
    assert events[-1].response.output_text == "One two three"
    assert events[-1].response.usage.output_tokens == 3
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert UsageRecord.objects.get().completion_tokens == 3


def test_the_sdks_stream_helper_assembles_the_final_response(sdk, upstream):
    upstream.script(Reply(chunks=["x", "y"]))

    with sdk.responses.stream(model="gpt-4o-mini", input="Hi") as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()

    assert text == final.output_text == "xy"


def test_a_function_tool_call_goes_round_trip(sdk, upstream):
    upstream.script(Reply(text="", tool_calls=[{"name": "weather", "arguments": '{"city":"Oslo"}'}]), Reply("Rainy."))

    first = sdk.responses.create(model="gpt-4o-mini", input="Weather in Oslo?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, json.loads(call.arguments)) == ("weather", {"city": "Oslo"})

    second = sdk.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "Rain, 4 °C"},
        ],
        tools=[WEATHER],
    )

    assert second.output_text == "Rainy."
    sent = upstream.requests[1].json
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Rain, 4 °C"}
    assert sent["tools"][0]["function"]["name"] == "weather"


def test_a_streamed_function_call_arrives_whole(sdk, upstream):
    upstream.script(Reply(text="", tool_calls=[{"name": "weather", "arguments": '{"city":"Oslo"}'}]))

    events = list(sdk.responses.create(model="gpt-4o-mini", input="Weather?", tools=[WEATHER], stream=True))

    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == '{"city":"Oslo"}'
    (call,) = events[-1].response.output
    assert (call.type, call.name, call.status) == ("function_call", "weather", "completed")


class Weather(BaseModel):
    city: str
    celsius: int


def test_a_json_schema_text_format_is_parsed_by_the_sdk(sdk, upstream):
    upstream.script(Reply(text='{"city":"Oslo","celsius":4}'))

    response = sdk.responses.parse(model="gpt-4o-mini", input="Weather in Oslo as JSON", text_format=Weather)

    assert response.output_parsed == Weather(city="Oslo", celsius=4)
    sent = upstream.requests[0].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Weather"
    assert sent["json_schema"]["schema"]["properties"]["celsius"] == {"title": "Celsius", "type": "integer"}


def test_a_used_up_quota_is_a_rate_limit_error(sdk, alice, upstream):
    alice.tokens_per_day = 10
    alice.save()

    with pytest.raises(openai.RateLimitError) as limited:
        sdk.responses.create(model="gpt-4o-mini", input="Hi")

    assert limited.value.code == "insufficient_quota"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"previous_response_id": "resp_1"}, "does not store responses"),
        ({"tools": [{"type": "web_search"}]}, "only function tools"),
        ({"background": True}, "background responses are not supported"),
    ],
)
def test_what_cannot_be_honoured_is_a_bad_request_error(sdk, upstream, extra, words):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model="gpt-4o-mini", input="Hi", **extra)

    assert words in refused.value.message
    assert upstream.requests == []


def test_a_client_that_disconnects_mid_stream_cancels_the_upstream_call_and_is_settled(sdk, upstream):
    upstream.script(Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))

    stream = sdk.responses.create(model="gpt-4o-mini", input="Go on", stream=True)
    received = [next(stream) for _ in range(6)]
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
    assert received[-1].type == "response.output_text.delta"
