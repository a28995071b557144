"""The official openai SDK's embeddings, pointed at the site, work unchanged and are billed at the input price."""

import math

import openai
import pytest

from accounts.models import Reservation, UsageRecord
from accounts.services import api_key_create
from conversations.models import ChatModel

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "text-embedding-3-small"


@pytest.fixture
def key(alice, catalog):
    return api_key_create(user=alice, name="search")


@pytest.fixture
def sdk(live_site, key):
    return openai.OpenAI(base_url=f"{live_site}/v1", api_key=key[1], max_retries=0, timeout=15)


def test_the_sdks_default_base64_vectors_decode_to_unit_vectors_and_are_billed(sdk, key, upstream, alice):
    result = sdk.embeddings.create(model=MODEL, input=["north", "south", "north"])

    # The SDK asks for base64 unless told otherwise, and decodes it to floats itself.
    assert upstream.requests[0].json["encoding_format"] == "base64"
    vectors = [item.embedding for item in result.data]
    assert [len(vector) for vector in vectors] == [1536] * 3
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert vectors[0] == vectors[2] != vectors[1]
    record = UsageRecord.objects.get()
    assert (record.user, record.api_key, record.model.model_id) == (alice, key[0], MODEL)
    assert (record.prompt_tokens, record.completion_tokens) == (result.usage.prompt_tokens, 0)
    assert record.cost == ChatModel.objects.get(model_id=MODEL).cost(prompt_tokens=result.usage.prompt_tokens)
    assert not Reservation.objects.exists()


def test_float_vectors_with_fewer_dimensions(sdk, upstream):
    result = sdk.embeddings.create(model=MODEL, input="one text", encoding_format="float", dimensions=256)

    assert len(result.data) == 1
    assert len(result.data[0].embedding) == 256
    assert upstream.requests[0].json["dimensions"] == 256


def test_a_used_up_quota_is_a_rate_limit_error(sdk, alice, upstream):
    alice.tokens_per_day = 10
    alice.save()

    with pytest.raises(openai.RateLimitError) as limited:
        sdk.embeddings.create(model=MODEL, input="a text longer than ten tokens of budget can hold, surely")

    assert limited.value.code == "insufficient_quota"
    assert upstream.requests == []


def test_a_chat_model_is_not_found_for_embeddings(sdk, upstream):
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.embeddings.create(model="gpt-4o-mini", input="Hi")

    assert refused.value.code == "model_not_found"
