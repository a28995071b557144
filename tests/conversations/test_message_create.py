"""Sending a message: POST /c/new/messages/ and /c/<id>/messages/."""

import asyncio
from decimal import Decimal

import pytest
from django.test import AsyncClient, Client

from conversations.models import ChatModel, Conversation, Message
from tests.conftest import HTMX, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


async def latest_reply() -> Message:
    return await Message.objects.filter(role=Message.Role.ASSISTANT).select_related("conversation").alast()


def stream_url(reply: Message) -> str:
    return f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/"


async def test_it_streams_the_reply_and_stores_its_usage_and_cost(alice_async, upstream):
    upstream.script(
        Reply(
            text="Paris is the capital.", first_delay=0.3, prompt_tokens=1000, completion_tokens=500, cached_tokens=200
        )
    )

    response = await alice_async.post("/c/new/messages/", {"text": "Capital of France?", "model": "gpt-4o-mini"})

    reply = await latest_reply()
    assert response.status_code == 302
    assert response["Location"] == f"/c/{reply.conversation_id}/"
    text, status = await watch_reply(alice_async, stream_url(reply))
    assert (text, status) == ("Paris is the capital.", "complete")
    await reply.arefresh_from_db()
    assert reply.content == "Paris is the capital."
    assert (reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens) == (1000, 500, 200)
    # 800 fresh input at $0.15/M + 200 cached at $0.075/M + 500 output at $0.60/M
    assert reply.cost == Decimal("0.00043500")
    assert not reply.usage_estimated
    assert reply.finish_reason == "stop"
    assert reply.time_to_first_token is not None and reply.duration >= reply.time_to_first_token


async def test_it_answers_before_the_reply_is_written(alice_async, upstream):
    upstream.script(Reply(text="slow answer", first_delay=1.5))

    response = await alice_async.post("/c/new/messages/", {"text": "Hi"}, headers=HTMX)

    reply = await latest_reply()
    assert response.status_code == 200
    assert reply.status in Message.LIVE_STATUSES
    assert reply.content == ""
    text, status = await watch_reply(alice_async, stream_url(reply))
    assert (text, status) == ("slow answer", "complete")


async def test_it_starts_a_chat_titled_from_the_first_message(alice_async, alice, upstream):
    await alice_async.post(
        "/c/new/messages/", {"text": "  How do   I bake\nsourdough bread at home without a scale?  "}
    )

    conversation = await Conversation.objects.aget(user=alice)
    assert conversation.title == "How do I bake sourdough bread at home without a scale?"
    assert await conversation.messages.acount() == 2


async def test_it_sends_history_system_prompt_and_limits_upstream(alice_async, upstream):
    upstream.script(Reply(text="First answer."), Reply(text="Second answer."))
    await alice_async.post("/c/new/messages/", {"text": "First question", "system_prompt": "Answer like a pirate."})
    first = await latest_reply()
    await watch_reply(alice_async, stream_url(first))

    await alice_async.post(f"/c/{first.conversation_id}/messages/", {"text": "Second question"})
    second = await latest_reply()
    await watch_reply(alice_async, stream_url(second))

    sent = upstream.requests[1]
    assert sent.json["messages"] == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Second question"},
    ]
    model = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    assert sent.json["model"] == "gpt-4o-mini"
    assert sent.json["max_tokens"] == model.max_output_tokens
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"


async def test_it_uses_the_model_picked_for_the_message(alice_async, upstream):
    await alice_async.post("/c/new/messages/", {"text": "Hi", "model": "gpt-4o"})
    reply = await latest_reply()
    await watch_reply(alice_async, stream_url(reply))

    assert upstream.requests[0].json["model"] == "gpt-4o"
    assert (await Conversation.objects.select_related("model").aget()).model.model_id == "gpt-4o"


async def test_htmx_gets_the_new_turn_as_a_fragment(alice_async, upstream):
    await alice_async.post("/c/new/messages/", {"text": "First"})
    reply = await latest_reply()
    await watch_reply(alice_async, stream_url(reply))
    await alice_async.post("/c/new/messages/", {"text": "A newer chat"})  # so the first one must move up
    await watch_reply(alice_async, stream_url(await latest_reply()))

    response = await alice_async.post(f"/c/{reply.conversation_id}/messages/", {"text": "Second"}, headers=HTMX)

    html = response.content.decode()
    second = await latest_reply()
    assert response.status_code == 200
    assert "<html" not in html
    assert "Second" in html and "First" not in html.split('id="conversation-list"')[0]
    assert f'data-stream-url="{stream_url(second)}"' in html
    assert 'hx-swap-oob="true"' in html  # the chat list moves this chat to the top
    await watch_reply(alice_async, stream_url(second))


async def test_chatting_on_in_the_newest_chat_leaves_the_chat_list_alone(alice_async, upstream):
    await alice_async.post("/c/new/messages/", {"text": "First"})
    reply = await latest_reply()
    await watch_reply(alice_async, stream_url(reply))

    response = await alice_async.post(f"/c/{reply.conversation_id}/messages/", {"text": "Second"}, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200 and "Second" in html
    assert 'id="conversation-list"' not in html  # already at the top: nothing to re-render
    await watch_reply(alice_async, stream_url(await latest_reply()))


async def test_htmx_first_message_swaps_in_the_new_chat(alice_async, upstream):
    response = await alice_async.post("/c/new/messages/", {"text": "Hello"}, headers=HTMX)

    reply = await latest_reply()
    assert response["HX-Push-Url"] == f"/c/{reply.conversation_id}/"
    assert response["HX-Retarget"] == "#chat"
    assert 'id="chat"' in response.content.decode()
    await watch_reply(alice_async, stream_url(reply))


@pytest.mark.parametrize(
    "data, reason",
    [
        ({"text": ""}, "Type a message first."),
        ({"text": "   \n\t "}, "Type a message first."),
        ({"text": "x" * 41}, "Messages can be at most 40 characters; this one has 41."),
        ({"text": "Hi", "model": "gpt-unknown"}, "That model is not available."),
        ({"text": "Hi", "model": "gpt-4o-disabled"}, "That model is not available."),
        ({"text": "Hi", "system_prompt": "s" * 101}, "The system prompt can be at most 100 characters."),
    ],
)
async def test_it_refuses_bad_input_and_stores_nothing(alice_async, upstream, settings, data, reason):
    settings.MESSAGE_MAX_CHARS = 40
    settings.SYSTEM_PROMPT_MAX_CHARS = 100
    await ChatModel.objects.filter(model_id="gpt-4o").aupdate(model_id="gpt-4o-disabled", enabled=False)

    response = await alice_async.post("/c/new/messages/", data, headers=HTMX)

    assert response.status_code == 400
    assert reason in response.content.decode()
    assert response["HX-Retarget"] == "#composer-errors"
    assert await Message.objects.acount() == 0
    assert await Conversation.objects.acount() == 0
    assert upstream.requests == []


async def test_without_javascript_a_refusal_shows_the_page_with_the_error_and_the_draft(
    alice_async, settings, upstream
):
    settings.MESSAGE_MAX_CHARS = 5

    response = await alice_async.post("/c/new/messages/", {"text": "too long"})

    html = response.content.decode()
    assert response.status_code == 400
    assert "<html" in html
    assert "Messages can be at most 5 characters" in html
    assert ">too long</textarea>" in html


async def test_it_refuses_a_second_message_while_a_reply_is_streaming(alice_async, upstream):
    upstream.script(Reply(text="long answer", first_delay=1.0))
    await alice_async.post("/c/new/messages/", {"text": "One"})
    reply = await latest_reply()

    response = await alice_async.post(f"/c/{reply.conversation_id}/messages/", {"text": "Two"}, headers=HTMX)

    assert response.status_code == 409
    assert "Wait for the reply to finish" in response.content.decode()
    assert await Message.objects.acount() == 2
    await watch_reply(alice_async, stream_url(reply))


async def test_it_refuses_another_users_conversation(alice_async, bob, upstream):
    bobs = await Conversation.objects.acreate(user=bob, model=await ChatModel.objects.aget(model_id="gpt-4o-mini"))

    response = await alice_async.post(f"/c/{bobs.pk}/messages/", {"text": "let me in"})

    assert response.status_code == 404
    assert await Message.objects.acount() == 0
    assert upstream.requests == []


async def test_anonymous_is_sent_to_login(catalog):
    response = await AsyncClient().post("/c/new/messages/", {"text": "Hi"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert await Message.objects.acount() == 0


async def test_get_is_not_allowed(alice_async):
    response = await alice_async.get("/c/new/messages/")

    assert response.status_code == 405


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
def test_it_requires_the_csrf_token(alice, catalog, headers):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/c/new/messages/", {"text": "Hi"}, headers=headers)

    assert response.status_code == 403
    assert Message.objects.count() == 0


async def test_a_reply_outlives_the_request_that_started_it(alice_async, upstream):
    upstream.script(Reply(text="one two three four", delay=0.1))
    await alice_async.post("/c/new/messages/", {"text": "Count"})
    reply = await latest_reply()

    # Nobody watches: the reply is still written to the end.
    for _ in range(50):
        await asyncio.sleep(0.1)
        await reply.arefresh_from_db()
        if reply.status == Message.Status.COMPLETE:
            break
    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "one two three four"


async def test_replies_reuse_the_connection_to_the_upstream(alice_async, upstream):
    # A new connection per reply would cost a TLS handshake each time against a real provider.
    await alice_async.post("/c/new/messages/", {"text": "One"})
    first = await latest_reply()
    await watch_reply(alice_async, stream_url(first))
    await alice_async.post(f"/c/{first.conversation_id}/messages/", {"text": "Two"})
    await watch_reply(alice_async, stream_url(await latest_reply()))

    assert len(upstream.requests) == 2
    assert upstream.requests[0].peer == upstream.requests[1].peer


async def test_a_chat_whose_reply_ends_last_is_at_the_top_of_the_list(alice_async, upstream):
    upstream.script(Reply(text="A slow answer", first_delay=0.5), Reply(text="A quick answer"))
    await alice_async.post("/c/new/messages/", {"text": "Slow one"})
    slow = await latest_reply()
    await alice_async.post("/c/new/messages/", {"text": "Quick one"})  # sent later: on top while the slow one runs
    await watch_reply(alice_async, stream_url(await latest_reply()))

    await watch_reply(alice_async, stream_url(slow))

    page = parse_html((await alice_async.get("/")).content)
    listed = [item.attrs["id"] for item in page.find(id="conversation-list").find_all("li", class_="chat-item")]
    assert listed[0] == f"chat-item-{slow.conversation_id}"
    assert len(listed) == 2
