"""LangChain's ChatOpenAI with use_responses_api=True, pointed at the site, works unchanged (it failed before
/v1/responses existed)."""

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from accounts.models import Reservation, UsageRecord
from accounts.services import api_key_create
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def llm(live_site, alice, catalog):
    _, secret = api_key_create(user=alice, name="langchain")
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=f"{live_site}/v1", api_key=secret, use_responses_api=True, max_retries=0
    )


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return "Rain"


def test_invoke_and_stream(llm, upstream):
    upstream.script(Reply(text="Hello, chain.", prompt_tokens=6, completion_tokens=3), Reply(chunks=["a", "b"]))

    answer = llm.invoke("Hi")
    streamed = "".join(chunk.text for chunk in llm.stream("Hi"))

    assert answer.text == "Hello, chain."
    assert (answer.usage_metadata["input_tokens"], answer.usage_metadata["output_tokens"]) == (6, 3)
    assert streamed == "ab"
    assert UsageRecord.objects.count() == 2
    assert not Reservation.objects.exists()


def test_a_bound_tool_goes_round_trip(llm, upstream):
    upstream.script(
        Reply(text="", tool_calls=[{"name": "weather", "arguments": '{"city": "Oslo"}'}]), Reply(text="It rains.")
    )
    chain = llm.bind_tools([weather])
    question = HumanMessage("Weather in Oslo?")

    asked = chain.invoke([question])
    (call,) = asked.tool_calls
    answer = chain.invoke([question, asked, ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"])])

    assert (call["name"], call["args"]) == ("weather", {"city": "Oslo"})
    assert answer.text == "It rains."
    sent = upstream.requests[1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call["id"]
    assert sent[2] == {"role": "tool", "tool_call_id": call["id"], "content": "Rain"}
