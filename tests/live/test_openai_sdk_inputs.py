"""The official openai SDK sends what apps send today: images with structured outputs, reasoning models' fields."""

import openai
import pytest
from pydantic import BaseModel

from accounts.models import Reservation, UsageRecord
from accounts.services import api_key_create
from conversations.models import ChatModel
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
IMAGE_PART = {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}
LOOK = [{"role": "user", "content": [{"type": "text", "text": "What colour is it?"}, IMAGE_PART]}]


class Seen(BaseModel):
    colour: str


@pytest.fixture
def sdk(live_site, alice, catalog):
    _, secret = api_key_create(user=alice, name="vision app")
    return openai.OpenAI(base_url=f"{live_site}/v1", api_key=secret, max_retries=0, timeout=15)


def test_parse_with_an_image_gets_the_parsed_answer(sdk, upstream):
    upstream.script(Reply(text='{"colour": "red"}'))

    completion = sdk.chat.completions.parse(model="gpt-4o-mini", messages=LOOK, response_format=Seen)

    assert completion.choices[0].message.parsed == Seen(colour="red")
    forwarded = upstream.requests[0].json
    assert forwarded["messages"][0]["content"][1] == IMAGE_PART
    assert forwarded["response_format"]["json_schema"]["name"] == "Seen"
    assert UsageRecord.objects.get().model.model_id == "gpt-4o-mini"
    assert not Reservation.objects.exists()


def test_a_streamed_parse_with_an_image_gets_the_parsed_answer(sdk, upstream):
    upstream.script(Reply(chunks=['{"colour": ', '"blue"}']))

    with sdk.chat.completions.stream(model="gpt-4o-mini", messages=LOOK, response_format=Seen) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()

    assert "".join(deltas) == '{"colour": "blue"}'
    assert final.choices[0].message.parsed == Seen(colour="blue")
    assert upstream.requests[0].json["messages"][0]["content"][1] == IMAGE_PART


def test_an_image_to_a_text_only_model_is_a_bad_request(sdk, upstream):
    ChatModel.objects.filter(model_id="gpt-4o-mini").update(accepts_images=False)

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=LOOK)

    assert refused.value.code == "images_not_supported"
    assert upstream.requests == []


def test_a_reasoning_model_gets_max_completion_tokens_and_its_options(sdk, upstream):
    ChatModel.objects.filter(model_id="gpt-4o").update(token_limit_param="max_completion_tokens")

    sdk.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "developer", "content": "Think."}, {"role": "user", "content": "2+2?"}],
        max_completion_tokens=300,
        reasoning_effort="high",
        verbosity="low",
        logprobs=True,
        top_logprobs=2,
    )

    forwarded = upstream.requests[0].json
    assert forwarded["max_completion_tokens"] == 300
    assert "max_tokens" not in forwarded
    assert (forwarded["reasoning_effort"], forwarded["verbosity"]) == ("high", "low")
    assert (forwarded["logprobs"], forwarded["top_logprobs"]) == (True, 2)
