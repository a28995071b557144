"""A new chat is named by a short call after its first reply: billed and recorded, switchable off, never over a
name the user gave, and shown at once on the open page."""

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from hypothesis import given
from hypothesis import strategies as st

from accounts.models import DailyUsage, Reservation, UsageRecord
from conversations.models import TITLE_LENGTH, ChatModel, Conversation, Message
from conversations.replies.runner import runner_of_this_loop
from conversations.services.titles import TITLE_INSTRUCTIONS, TITLE_MAX_TOKENS, title_clean
from tests.conftest import HTMX, parse_sse, watch_reply
from tests.fake_upstream import Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = "How do I keep basil alive on a windowsill through the winter?"


@pytest.fixture(autouse=True)
def titles_on(settings):
    settings.CHAT_TITLES = True
    settings.SUMMARY_MODEL = ""


async def send(client, text: str, chat: Conversation | None = None) -> Message:
    """Send a message (a new chat without `chat`) and watch its reply to the end; the title call may follow."""
    url = f"/c/{chat.pk}/messages/" if chat else "/c/new/messages/"
    response = await client.post(url, {"text": text})
    assert response.status_code == 302
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await watch_reply(client, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    return reply


async def generation_done(reply: Message) -> None:
    """Wait (5 s at most) until the reply's generation, title call included, has ended."""
    generation = runner_of_this_loop().generations.get(reply.pk)
    if generation is not None:
        async with asyncio.timeout(5):
            await generation.task


async def chat_of(reply: Message) -> Conversation:
    return await Conversation.objects.aget(pk=reply.conversation_id)


async def test_the_first_reply_is_followed_by_a_title_call_that_names_the_chat(alice_async, upstream):
    upstream.script(Reply("Give it light and little water."), Reply('"Basil Care in Winter."'))

    reply = await send(alice_async, FIRST)
    await generation_done(reply)

    chat = await chat_of(reply)
    assert chat.title == "Basil Care in Winter"
    _, title_request = upstream.requests
    assert title_request.json.get("stream") is not True  # a whole answer: nobody watches it come
    assert title_request.json["max_tokens"] == TITLE_MAX_TOKENS
    assert title_request.json["messages"] == [
        {"role": "system", "content": TITLE_INSTRUCTIONS},
        {"role": "user", "content": f"User: {FIRST}\n\nAssistant: Give it light and little water."},
    ]


async def test_the_title_call_is_billed_to_the_user_and_recorded(alice_async, alice, upstream):
    upstream.script(
        Reply("Give it light.", prompt_tokens=30, completion_tokens=4),
        Reply("Basil in winter", prompt_tokens=60, completion_tokens=5),
    )

    reply = await send(alice_async, FIRST)
    await generation_done(reply)

    mini = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    title = await UsageRecord.objects.aget(kind=UsageRecord.Kind.TITLE)
    assert (title.user_id, title.model_id, title.prompt_tokens, title.completion_tokens) == (alice.pk, mini.pk, 60, 5)
    assert title.cost == mini.cost(prompt_tokens=60, completion_tokens=5) == Decimal("0.000012")
    assert title.message_id is None  # no message of the chat is the title
    rollup = await DailyUsage.objects.aget(user=alice)
    assert (rollup.calls, rollup.tokens) == (2, 30 + 4 + 60 + 5)
    assert not await Reservation.objects.aexists()


async def test_titles_switched_off_leave_the_first_message_as_the_name(alice_async, upstream, settings):
    settings.CHAT_TITLES = False
    upstream.script(Reply("Give it light."), Reply("Never asked for"))

    reply = await send(alice_async, FIRST * 2)
    await generation_done(reply)

    assert len(upstream.requests) == 1
    chat = await chat_of(reply)
    assert chat.title == (FIRST * 2)[: TITLE_LENGTH - 1].rstrip() + "…"
    assert not await UsageRecord.objects.filter(kind=UsageRecord.Kind.TITLE).aexists()


async def test_a_name_the_user_gives_meanwhile_is_never_replaced(alice_async, upstream):
    upstream.script(Reply("Give it light."), Reply("Basil in winter", first_delay=1.5))
    reply = await send(alice_async, FIRST)
    await sync_to_async(upstream.wait_for_requests)(2)  # the title call is on its way

    renamed = await alice_async.post(f"/c/{reply.conversation_id}/rename/", {"title": "My basil"})
    await generation_done(reply)

    assert renamed.status_code == 302
    assert len(upstream.requests) == 2  # the call was made before the rename...
    chat = await chat_of(reply)
    assert chat.title == "My basil"  # ...and its answer did not replace the user's name
    assert await UsageRecord.objects.filter(kind=UsageRecord.Kind.TITLE).aexists()  # it is billed all the same


async def test_a_chat_renamed_before_its_first_reply_ends_gets_no_title_call(alice_async, upstream):
    upstream.script(Reply(chunks=["Give ", "it ", "light."], first_delay=1.5), Reply("Never asked for"))
    response = await alice_async.post("/c/new/messages/", {"text": FIRST})
    chat = await Conversation.objects.aget()
    await alice_async.post(f"/c/{chat.pk}/rename/", {"title": "My basil"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await watch_reply(alice_async, f"/c/{chat.pk}/messages/{reply.pk}/stream/")
    await generation_done(reply)

    assert response.status_code == 302
    assert len(upstream.requests) == 1
    await chat.arefresh_from_db()
    assert chat.title == "My basil"


async def test_only_the_first_reply_names_the_chat(alice_async, upstream):
    upstream.script(Reply("Light."), Reply("Basil in winter"), Reply("Water weekly."))
    first = await send(alice_async, FIRST)
    await generation_done(first)

    second = await send(alice_async, "And how often to water it?", chat=await chat_of(first))
    await generation_done(second)

    assert len(upstream.requests) == 3
    assert (await chat_of(second)).title == "Basil in winter"


async def test_a_failed_title_call_keeps_the_first_name_and_holds_nothing(alice_async, upstream):
    upstream.script(Reply("Light."), Status.model_not_found("gpt-4o-mini"))

    reply = await send(alice_async, FIRST)
    await generation_done(reply)

    assert len(upstream.requests) == 2
    assert (await chat_of(reply)).title == FIRST[: TITLE_LENGTH - 1].rstrip() + "…"
    assert (await Message.objects.aget(pk=reply.pk)).status == Message.Status.COMPLETE
    assert not await Reservation.objects.aexists()


async def page_events(client, chat: Conversation, **params: str):
    response = await client.get(f"/c/{chat.pk}/events/", params)
    assert response.status_code == 200
    stream = aiter(response.streaming_content)
    assert await anext(stream) == b"retry: 1500\n\n"
    return stream


async def next_events(stream) -> list[tuple[str, str, str | None]]:
    async with asyncio.timeout(5):
        while not (events := parse_sse(await anext(stream))):
            pass  # a keep-alive comment
    return events


async def test_an_open_page_of_the_chat_hears_its_new_name(alice_async, upstream):
    upstream.script(Reply("Light."), Reply("Basil in winter", first_delay=1.5))
    reply = await send(alice_async, FIRST)
    stream = await page_events(alice_async, await chat_of(reply))
    try:
        assert await next_events(stream) == [("title", '{"title": "Basil in winter"}', None)]
    finally:
        await stream.aclose()
        await generation_done(reply)


async def test_a_page_that_listens_only_after_the_naming_hears_the_name_first(alice_async, upstream):
    upstream.script(Reply("Light."), Reply("Basil in winter"))
    reply = await send(alice_async, FIRST)
    await generation_done(reply)
    chat = await chat_of(reply)

    # The page was rendered with the first name (the events URL carries it); the chat has another now.
    stream = await page_events(alice_async, chat, title=FIRST[: TITLE_LENGTH - 1].rstrip() + "…")
    try:
        assert await next_events(stream) == [("title", '{"title": "Basil in winter"}', None)]
    finally:
        await stream.aclose()


async def test_the_page_renders_the_events_url_with_the_name_it_shows(alice_async, alice, upstream, settings):
    settings.CHAT_TITLES = False
    reply = await send(alice_async, "Tea & biscuits?")

    page = await alice_async.get(f"/c/{reply.conversation_id}/", headers=HTMX)

    events_url = f"/c/{reply.conversation_id}/events/?title=Tea%20%26%20biscuits%3F"
    assert f'data-events-url="{events_url}"' in page.content.decode()


@given(st.text(max_size=500))
def test_a_cleaned_title_is_one_short_line(text):
    title = title_clean(text)

    assert "\n" not in title and "\r" not in title
    assert len(title) <= TITLE_LENGTH
    assert title == title.strip()


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        ('"Basil Care in Winter."', "Basil Care in Winter"),
        ("Title: **Basil care**\n\nI chose this because...", "Basil care"),
        ("# Winter basil", "Winter basil"),
        ("«Basilic en hiver»", "Basilic en hiver"),
    ],
)
def test_a_title_is_cleaned_of_quotes_labels_and_markdown(answer, name):
    assert title_clean(answer) == name


async def test_another_users_page_events_hear_nothing_of_it(alice_async, bob, upstream):
    upstream.script(Reply("Light."), Reply("Basil in winter"))
    reply = await send(alice_async, FIRST)
    await generation_done(reply)
    bob_client = type(alice_async)()
    await sync_to_async(bob_client.force_login)(bob)

    response = await bob_client.get(f"/c/{reply.conversation_id}/events/", {"title": "x"})

    assert response.status_code == 404
