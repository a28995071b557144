"""Watchers in the process that generates the reply: they read it in-process, never through the channels layer."""

import asyncio
import json

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer

from conversations.models import Message
from conversations.replies import watcher
from tests.conftest import parse_sse, watch_reply
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


class CountingLayer(InMemoryChannelLayer):
    """The in-memory layer, keeping every message sent through it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sent: list[dict] = []

    async def send(self, channel, message):
        self.sent.append(message)
        await super().send(channel, message)

    async def group_send(self, group, message):
        self.sent.append(message)
        await super().group_send(group, message)


@pytest.fixture
def counting_layer(upstream, settings) -> CountingLayer:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.CountingLayer"}}
    return get_channel_layer()


async def read_some(client, url: str, minimum: int, **headers) -> tuple[str, str]:
    """Attach, read until at least `minimum` characters came, drop the connection: (text, last event id)."""
    response = await client.get(url, headers=headers)
    text, last_id = "", None
    async for chunk in response.streaming_content:
        for event, data, event_id in parse_sse(chunk):
            if event == "delta":
                text += json.loads(data)
                last_id = event_id
            assert event != "done", "the reply ended before the watcher left"
        if len(text) >= minimum:
            break
    await response.streaming_content.aclose()
    return text, last_id


async def test_watchers_in_the_generating_process_send_nothing_through_the_layer(alice_async, counting_layer, upstream):
    words = [f"word{i} " for i in range(60)]
    upstream.script(Reply(chunks=words, first_delay=0.2, delay=0.05))
    await alice_async.post("/c/new/messages/", {"text": "Tell me a story"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    url = f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/"

    whole = asyncio.create_task(watch_reply(alice_async, url))
    # A tab that drops its connection and re-attaches, again and again, each time from where it was.
    seen, last_id = await read_some(alice_async, url, 20)
    for minimum in (20, 40, 80):
        more, last_id = await read_some(alice_async, url, minimum, **{"Last-Event-ID": last_id})
        seen += more
        assert int(last_id) == len(seen)
    rest, status = await watch_reply(alice_async, url, **{"Last-Event-ID": last_id})
    text, whole_status = await whole

    await reply.arefresh_from_db()
    assert seen + rest == text == reply.content == "".join(words)
    assert status == whole_status == "complete"
    assert counting_layer.sent == []


async def test_a_watcher_that_falls_behind_gets_the_rest_in_one_piece(alice_async, upstream):
    words = [f"bit{i} " for i in range(40)]
    upstream.script(Reply(chunks=words, first_delay=0.1, delay=0.02))
    await alice_async.post("/c/new/messages/", {"text": "Go"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    response = await alice_async.get(f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    stream = aiter(response.streaming_content)
    while not (first := [json.loads(data) for event, data, _ in parse_sse(await anext(stream)) if event == "delta"]):
        pass

    # The client reads nothing more until the whole reply is written.
    for _ in range(200):
        await reply.arefresh_from_db()
        if not reply.is_live:
            break
        await asyncio.sleep(0.05)
    events = parse_sse(b"".join([chunk async for chunk in stream]))

    rest = [json.loads(data) for event, data, _ in events if event == "delta"]
    assert "".join(first + rest) == "".join(words) == reply.content
    assert len(rest) == 1  # what it missed comes as one piece, not frame by frame
    assert events[-1][:2] == ("done", '{"status": "complete"}')


@pytest.mark.parametrize("ending", ["complete", "stopped"])
async def test_a_watcher_here_hears_how_the_reply_ended_from_its_generator_not_the_database(
    alice_async, upstream, monkeypatch, ending
):
    statuses_read = []
    read = watcher._reply_status
    monkeypatch.setattr(watcher, "_reply_status", lambda reply_id: statuses_read.append(reply_id) or read(reply_id))
    upstream.script(Reply(chunks=[f"w{i} " for i in range(30)], first_delay=0.1, delay=0.03))
    await alice_async.post("/c/new/messages/", {"text": "Go"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    url = f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/"

    watching = asyncio.create_task(watch_reply(alice_async, url))
    if ending == "stopped":
        await asyncio.sleep(0.3)
        await alice_async.post(f"/c/{reply.conversation_id}/messages/{reply.pk}/stop/")
    text, status = await watching

    await reply.arefresh_from_db()
    assert (status, text) == (reply.status, reply.content) == (ending, reply.content)
    assert statuses_read == []


async def test_a_watcher_that_attaches_after_the_first_words_gets_them_with_the_streams_opening(alice_async, upstream):
    # One piece, one send: the browser is not woken by the opening alone and then again by the words.
    upstream.script(Reply(chunks=["Hello ", "there"], first_delay=0.05, delay=1.0))
    await alice_async.post("/c/new/messages/", {"text": "Hi"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await asyncio.sleep(0.5)  # the first words are in, the rest a second away

    response = await alice_async.get(f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    first = await anext(aiter(response.streaming_content))
    await response.streaming_content.aclose()

    assert first.startswith(watcher.RETRY_PREAMBLE)
    assert [(event, json.loads(data)) for event, data, _ in parse_sse(first)] == [("delta", "Hello ")]
