"""The models on offer follow the upstream's GET /v1/models, and each reply records the model that answered."""

import logging

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import UsageRecord
from accounts.services import api_key_create
from conversations.models import ChatModel, Conversation, Message
from conversations.upstream import served_model_ids, upstream_offer
from tests.conftest import HTMX, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import MODEL_IDS, Reply

pytestmark = pytest.mark.django_db(transaction=True)


def picker_options(page) -> list[str]:
    return [option.attrs["value"] for option in parse_html(page.content).find(id="composer-model").find_all("option")]


async def chat_on(alice, model_id: str) -> Conversation:
    return await Conversation.objects.acreate(user=alice, model=await ChatModel.objects.aget(model_id=model_id))


async def test_the_picker_offers_only_the_models_the_upstream_lists(alice_async, listing):
    listing.models = ("gpt-4o-mini", "smollm2-135m", "an-uncatalogued-model")
    await upstream_offer()

    page = await alice_async.get("/")

    assert picker_options(page) == ["gpt-4o-mini", "smollm2-135m"]


async def test_the_picker_follows_the_list_when_it_changes(alice_async, listing):
    listing.models = ("gpt-4o",)
    await upstream_offer()
    before = picker_options(await alice_async.get("/"))

    listing.models = ("gpt-4o-mini", "gpt-4o")
    await upstream_offer()
    after = picker_options(await alice_async.get("/"))

    assert (before, after) == (["gpt-4o"], ["gpt-4o", "gpt-4o-mini"])


async def test_a_failed_read_keeps_the_last_good_list_and_says_why_in_the_log(alice_async, listing, caplog):
    listing.models = ("gpt-4o",)
    await upstream_offer()

    listing.models = None  # GET /v1/models answers 503
    with caplog.at_level(logging.WARNING, logger="conversations.upstream"):
        await upstream_offer()

    assert served_model_ids() == frozenset({"gpt-4o"})
    assert picker_options(await alice_async.get("/")) == ["gpt-4o"]
    assert "could not read the upstream's model list" in caplog.text


async def test_a_message_for_a_model_the_upstream_does_not_list_is_refused_and_nothing_is_sent(
    alice, alice_async, listing
):
    chat = await chat_on(alice, "gpt-4o")
    listing.models = ("gpt-4o-mini",)
    await upstream_offer()

    response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Hello?"}, headers=HTMX)

    assert response.status_code == 400
    assert "The model provider does not serve GPT-4o at the moment. Pick another model." in response.content.decode()
    assert listing.requests == []  # (the fake keeps no log of GET /v1/models)
    assert not await Message.objects.filter(conversation=chat).aexists()


async def test_a_model_dropped_from_the_list_since_the_page_was_read_is_refused_by_the_reply(
    alice, alice_async, listing
):
    """The picker's list may be a few minutes old: the reply reads the list again before anything goes out."""
    chat = await chat_on(alice, "gpt-4o")
    await upstream_offer()  # gpt-4o is listed when the message is taken
    listing.models = ("gpt-4o-mini",)

    await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Hello?"}, headers=HTMX)
    reply = await Message.objects.aget(conversation=chat, role=Message.Role.ASSISTANT)
    _, status = await watch_reply(alice_async, f"/c/{chat.pk}/messages/{reply.pk}/stream/")

    await reply.arefresh_from_db()
    assert status == Message.Status.ERROR
    assert reply.error_code == "model_not_served"
    assert reply.error_text.startswith("The model provider does not serve GPT-4o (gpt-4o) at the moment")
    assert listing.requests == []
    assert not await UsageRecord.objects.aexists()


async def test_the_apis_model_list_follows_the_same_rule(alice, listing):
    listing.models = ("gpt-4o",)
    await upstream_offer()
    _, secret = await sync_to_async(api_key_create)(user=alice, name="app")

    response = await AsyncClient().get("/v1/models", headers={"Authorization": f"Bearer {secret}"})

    assert [model["id"] for model in response.json()["data"]] == ["gpt-4o"]


async def test_before_the_list_was_ever_read_nothing_is_hidden(alice_async, listing, settings, fake_upstream):
    # Another upstream, never asked: the site cannot know yet, and the reply's own check will ask.
    settings.OPENAI_BASE_URL = fake_upstream.base_url + "/"

    page = await alice_async.get("/")

    assert served_model_ids() is None
    assert sorted(picker_options(page)) == sorted(MODEL_IDS)


@pytest.mark.parametrize(
    ("reported", "footer"),
    [
        ("gpt-4o-mini-2024-07-18", "GPT-4o mini (answered by gpt-4o-mini-2024-07-18)"),
        (None, "GPT-4o mini ·"),
    ],
    ids=["another-name", "the-same"],
)
async def test_each_reply_records_the_model_the_upstream_reported_and_shows_it_when_it_differs(
    alice_async, upstream, reported, footer
):
    upstream.script(Reply(text="Hi!", model=reported))

    response = await alice_async.post("/c/new/messages/", {"text": "Hi", "model": "gpt-4o-mini"})
    reply = await Message.objects.aget(role=Message.Role.ASSISTANT)
    await watch_reply(alice_async, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    page = await alice_async.get(response["Location"])

    await reply.arefresh_from_db()
    assert reply.reported_model == (reported or "gpt-4o-mini")
    usage_line = parse_html(page.content).find(id=f"message-{reply.pk}").find(class_="usage").text
    assert usage_line.startswith(footer)
    assert ("answered by" in usage_line) == (reported is not None)
