"""POST /v1/embeddings at the HTTP level: the catalog's embedding models, metering, refusals.

The official SDK's view of the same endpoint is in tests/live/test_openai_sdk_embeddings.py.
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
from gateway.embeddings import embeddings_request_parse
from tests.fake_upstream import Hang, Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/embeddings"
MODEL = "text-embedding-3-small"


def post(secret: str, body, url: str = URL):
    return AsyncClient().post(
        url, json.dumps(body), content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )


async def test_inputs_are_embedded_and_billed_at_the_input_price(secret, upstream, alice):
    upstream.script(Reply(prompt_tokens=7))

    response = await post(secret, {"model": MODEL, "input": ["one", "two"], "dimensions": 8, "user": "u-1"})

    assert response.status_code == 200
    answer = response.json()
    assert [len(item["embedding"]) for item in answer["data"]] == [8, 8]
    assert answer["usage"]["prompt_tokens"] == 7
    assert upstream.requests[0].json == {"model": MODEL, "input": ["one", "two"], "dimensions": 8}
    record = await UsageRecord.objects.select_related("model").aget()
    assert (record.user_id, record.kind, record.prompt_tokens, record.completion_tokens) == (alice.pk, "api", 7, 0)
    assert record.cost == record.model.cost(prompt_tokens=7) > 0
    assert not await Reservation.objects.aexists()


async def test_token_arrays_are_embedded_too(secret, upstream):
    response = await post(secret, {"model": MODEL, "input": [[1, 2, 3], [4]]})

    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    assert upstream.requests[0].json["input"] == [[1, 2, 3], [4]]


async def test_embedding_models_are_not_chat_models_and_chat_models_do_not_embed(secret, upstream):
    chat = await post(
        secret, {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}, url="/v1/chat/completions"
    )
    embed = await post(secret, {"model": "gpt-4o-mini", "input": "Hi"})
    listed = await AsyncClient().get("/v1/models", headers={"Authorization": f"Bearer {secret}"})

    assert chat.status_code == embed.status_code == 404
    assert MODEL not in {model["id"] for model in listed.json()["data"]}
    assert not await ChatModel.objects.for_chat().filter(model_id=MODEL).aexists()
    assert upstream.requests == []


async def test_an_app_that_names_its_embedding_model_can_retrieve_it(secret, alice):
    auth = {"Authorization": f"Bearer {secret}"}

    found = await AsyncClient().get(f"/v1/models/{MODEL}", headers=auth)
    await ChatModel.objects.filter(model_id=MODEL).aupdate(enabled=False)
    gone = await AsyncClient().get(f"/v1/models/{MODEL}", headers=auth)

    assert (found.status_code, found.json()["id"]) == (200, MODEL)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "model_not_found")


async def test_a_used_up_quota_refuses_before_the_provider_hears_of_it(secret, alice, upstream):
    alice.tokens_per_day = 10
    await alice.asave()

    response = await post(secret, {"model": MODEL, "input": "a longer text than ten tokens could ever hold" * 3})

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert upstream.requests == []


async def test_a_provider_error_is_passed_on_and_bills_nothing(secret, upstream):
    upstream.script(Status(429, retry_after=600))

    response = await post(secret, {"model": MODEL, "input": "Hi"})

    assert response.status_code == 429
    assert not await UsageRecord.objects.aexists()
    assert not await Reservation.objects.aexists()


async def test_a_provider_gone_silent_is_a_server_error_and_holds_nothing(secret, upstream, settings):
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    upstream.script(Hang(5))

    response = await post(secret, {"model": MODEL, "input": "Hi"})

    assert response.status_code == 502
    assert response.json()["error"]["type"] == "server_error"
    assert not await Reservation.objects.aexists()


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": MODEL, "input": ""}, "input"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": ["a", 1]}, "input"),
        ({"model": MODEL, "input": [[1, -2]]}, "input[0][1]"),
        ({"model": MODEL, "input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"model": MODEL, "input": "a", "dimensions": 0}, "dimensions"),
        ({"model": MODEL}, "input"),
        ({"input": "a"}, "model"),
        ({"model": MODEL, "input": "a", "extra": 1}, "extra"),
    ],
)
async def test_malformed_requests_name_the_offending_field(secret, upstream, body, param):
    response = await post(secret, body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@hypothesis_settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.sampled_from(["model", "input", "encoding_format", "dimensions", "user"]), JSON))
def test_any_body_is_either_checked_whole_or_refused_with_a_named_reason(body):
    try:
        asked = embeddings_request_parse(body)
    except InvalidRequest as refused:
        assert refused.message
        return
    assert asked.inputs and all(
        (isinstance(item, str) and item) or (isinstance(item, list) and item and all(type(t) is int for t in item))
        for item in asked.inputs
    )
    assert set(asked.options) <= {"encoding_format", "dimensions"}
