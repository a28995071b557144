"""Stopping a reply: POST /c/<id>/messages/<id>/stop/, and deleting a chat mid-reply."""

import asyncio
import json

import pytest
from django.test import AsyncClient, Client

from conversations.models import ChatModel, Conversation, Message
from tests.conftest import HTMX, parse_sse, watch_reply
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

LONG = [f"token{i} " for i in range(400)]


async def start_long_reply(client, upstream) -> Message:
    upstream.script(Reply(chunks=LONG, first_delay=0.05, delay=0.02))
    await client.post("/c/new/messages/", {"text": "Write a lot"})
    return await Message.objects.filter(role=Message.Role.ASSISTANT).alast()


def base(reply: Message) -> str:
    return f"/c/{reply.conversation_id}/messages/{reply.pk}"


async def text_so_far(response, minimum: int) -> str:
    text = ""
    async for chunk in response.streaming_content:
        text += "".join(json.loads(data) for event, data, _ in parse_sse(chunk) if event == "delta")
        if len(text) >= minimum:
            return text
    raise AssertionError("the stream ended early")


async def test_stop_ends_the_reply_keeps_its_text_and_closes_the_upstream(alice_async, upstream):
    reply = await start_long_reply(alice_async, upstream)
    watcher = await alice_async.get(f"{base(reply)}/stream/")
    seen = await text_so_far(watcher, 30)

    response = await alice_async.post(f"{base(reply)}/stop/", headers=HTMX)

    assert response.status_code == 204
    await asyncio.to_thread(upstream.wait_for_disconnects, 1)
    rest = ""
    status = None
    async for chunk in watcher.streaming_content:
        for event, data, _ in parse_sse(chunk):
            if event == "delta":
                rest += json.loads(data)
            elif event == "done":
                status = json.loads(data)["status"]
    await reply.arefresh_from_db()
    assert status == "stopped"
    assert reply.status == Message.Status.STOPPED
    assert reply.content == seen + rest
    assert 30 <= len(reply.content) < len("".join(LONG))
    # No usage arrives from a stream cut short: it is estimated and says so.
    assert reply.usage_estimated
    assert reply.completion_tokens > 0 and reply.prompt_tokens > 0
    assert len(upstream.requests) == 1


async def test_without_javascript_stop_returns_to_the_chat(alice_async, upstream):
    reply = await start_long_reply(alice_async, upstream)

    response = await alice_async.post(f"{base(reply)}/stop/")

    assert response.status_code == 302
    assert response["Location"] == f"/c/{reply.conversation_id}/"
    _, status = await watch_reply(alice_async, f"{base(reply)}/stream/")
    assert status == "stopped"


async def test_stop_before_the_upstream_answers_sends_nothing_more_and_costs_nothing(alice_async, upstream):
    upstream.script(Reply(text="never seen", first_delay=5))
    await alice_async.post("/c/new/messages/", {"text": "Hi"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()

    await alice_async.post(f"{base(reply)}/stop/")
    _, status = await watch_reply(alice_async, f"{base(reply)}/stream/")

    await reply.arefresh_from_db()
    assert status == "stopped"
    assert reply.content == ""
    await asyncio.to_thread(upstream.wait_for_disconnects, 1)


async def test_stopping_a_finished_reply_changes_nothing(alice_async, upstream):
    await alice_async.post("/c/new/messages/", {"text": "Hi"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await watch_reply(alice_async, f"{base(reply)}/stream/")

    response = await alice_async.post(f"{base(reply)}/stop/", headers=HTMX)

    await reply.arefresh_from_db()
    assert response.status_code == 204
    assert reply.status == Message.Status.COMPLETE


async def test_deleting_the_chat_mid_reply_stops_paying_for_it(alice_async, upstream, settings):
    settings.STREAM_FLUSH_INTERVAL = 0.1
    reply = await start_long_reply(alice_async, upstream)
    await asyncio.to_thread(upstream.wait_for_requests, 1)

    await alice_async.post(f"/c/{reply.conversation_id}/delete/")

    await asyncio.to_thread(upstream.wait_for_disconnects, 1)
    assert not await Message.objects.filter(pk=reply.pk).aexists()


async def test_it_refuses_another_users_reply(alice_async, bob, upstream):
    model = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    conversation = await Conversation.objects.acreate(user=bob, model=model)
    reply = await Message.objects.acreate(
        conversation=conversation, user=bob, role="assistant", status=Message.Status.STREAMING
    )

    response = await alice_async.post(f"{base(reply)}/stop/")

    assert response.status_code == 404


async def test_anonymous_is_sent_to_login(catalog):
    response = await AsyncClient().post("/c/1/messages/2/stop/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


async def test_get_is_not_allowed(alice_async):
    response = await alice_async.get("/c/1/messages/2/stop/")

    assert response.status_code == 405


def test_it_requires_the_csrf_token(alice, catalog):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    model = ChatModel.objects.get(model_id="gpt-4o-mini")
    conversation = Conversation.objects.create(user=alice, model=model)
    reply = Message.objects.create(conversation=conversation, user=alice, role="assistant", status="complete")

    response = client.post(f"{base(reply)}/stop/", headers=HTMX)

    assert response.status_code == 403
