"""Watching a reply: GET /c/<id>/messages/<id>/stream/ (SSE)."""

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient
from django.utils import timezone

from conversations import views
from conversations.models import ChatModel, Conversation, Message
from conversations.replies.watcher import KEEPALIVE
from conversations.services.replies import replies_interrupt_stale
from tests.conftest import parse_sse, sse_text_and_status, watch_reply
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


async def start_reply(client, text="Tell me a story") -> Message:
    await client.post("/c/new/messages/", {"text": text})
    return await Message.objects.filter(role=Message.Role.ASSISTANT).alast()


def url(reply: Message) -> str:
    return f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/"


async def read_until(response, predicate) -> tuple[str, str | None, list]:
    """Read SSE chunks until predicate(text so far) holds or the stream ends."""
    text, last_id, events = "", None, []
    async for chunk in response.streaming_content:
        for event, data, event_id in parse_sse(chunk):
            events.append(event)
            if event == "delta":
                text += json.loads(data)
                last_id = event_id
        if predicate(text) or "done" in events:
            break
    return text, last_id, events


async def test_it_delivers_tokens_as_they_arrive(alice_async, upstream):
    words = [f"w{i} " for i in range(12)]
    upstream.script(Reply(chunks=words, first_delay=0.2, delay=0.1))
    reply = await start_reply(alice_async)

    response = await alice_async.get(url(reply))
    frames = []
    async for chunk in response.streaming_content:
        events = parse_sse(chunk)
        frames += [json.loads(data) for event, data, _ in events if event == "delta"]
        if any(event == "done" for event, _, _ in events):
            break

    assert "".join(frames) == "".join(words)
    assert len(frames) > 5  # streamed in pieces as the upstream sent them, not in one block at the end


async def test_a_watcher_that_reattaches_gets_the_rest_without_gaps_or_repeats(alice_async, upstream):
    words = [f"word{i} " for i in range(30)]
    # Slow enough that the first watcher attaches before the end even on a loaded machine.
    upstream.script(Reply(chunks=words, first_delay=0.5, delay=0.1))
    reply = await start_reply(alice_async)

    first = await alice_async.get(url(reply))
    seen, last_id, _ = await read_until(first, lambda text: len(text) > 40)
    await first.streaming_content.aclose()  # the tab is closed mid-reply
    rest, status = await watch_reply(alice_async, url(reply), **{"Last-Event-ID": last_id})

    assert int(last_id) == len(seen)
    assert seen + rest == "".join(words)
    assert status == "complete"


async def test_a_page_reloaded_mid_reply_shows_the_stored_text_then_continues(alice_async, upstream, settings):
    settings.STREAM_FLUSH_INTERVAL = 0.2
    words = [f"part{i} " for i in range(30)]
    upstream.script(Reply(chunks=words, first_delay=0.1, delay=0.05))
    reply = await start_reply(alice_async)

    # The reload: the page renders what the database has, and streams from there.
    while not reply.content:
        await reply.arefresh_from_db()
    stored = reply.content
    rest, status = await watch_reply(alice_async, f"{url(reply)}?offset={len(stored)}")

    assert stored + rest == "".join(words)
    assert status == "complete"


async def test_closing_the_tab_does_not_stop_the_reply(alice_async, upstream):
    upstream.script(Reply(chunks=[f"t{i} " for i in range(20)], first_delay=0.1, delay=0.03))
    reply = await start_reply(alice_async)

    response = await alice_async.get(url(reply))
    await read_until(response, lambda text: len(text) > 5)
    await response.streaming_content.aclose()
    _, status = await watch_reply(alice_async, url(reply))

    await reply.arefresh_from_db()
    assert status == "complete"
    assert reply.content == "".join(f"t{i} " for i in range(20))
    assert upstream.disconnects == 0


async def test_a_finished_reply_ends_the_stream_at_once(alice_async, upstream):
    reply = await start_reply(alice_async)
    await watch_reply(alice_async, url(reply))

    text, status = await watch_reply(alice_async, url(reply))

    assert (text, status) == ("", "complete")


@pytest.fixture
def update_log(db):
    """Every UPDATE of a message row, recorded by a PostgreSQL trigger: what the database really saw."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE message_update_log (message_id bigint, content_length int);
            CREATE FUNCTION log_message_update() RETURNS trigger AS $$
            BEGIN INSERT INTO message_update_log VALUES (NEW.id, length(NEW.content)); RETURN NEW; END
            $$ LANGUAGE plpgsql;
            CREATE TRIGGER message_update_log AFTER UPDATE ON conversations_message
            FOR EACH ROW EXECUTE FUNCTION log_message_update();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER message_update_log ON conversations_message;"
            "DROP FUNCTION log_message_update; DROP TABLE message_update_log;"
        )


async def test_text_is_saved_about_once_a_second_never_per_token(alice_async, upstream, update_log):
    chunks = [f"c{i} " for i in range(100)]
    upstream.script(Reply(chunks=chunks, first_delay=0.05, delay=0.025))  # 100 tokens over 2.5 s
    reply = await start_reply(alice_async)

    await watch_reply(alice_async, url(reply))

    def writes():
        with connection.cursor() as cursor:
            cursor.execute("SELECT content_length FROM message_update_log WHERE message_id = %s", [reply.pk])
            return [row[0] for row in cursor.fetchall()]

    lengths = await sync_to_async(writes)()
    # streaming begins, about two partial saves, the final save
    assert 3 <= len(lengths) <= 6
    partial = lengths[1:-1]
    assert partial and 0 < partial[0] < lengths[-1] == len("".join(chunks))


async def test_a_reply_whose_process_died_is_marked_interrupted_with_its_text(alice_async, alice, settings):
    settings.STREAM_KEEPALIVE = 0.1
    model = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    conversation = await Conversation.objects.acreate(user=alice, model=model)
    orphan = await Message.objects.acreate(
        conversation=conversation,
        user=alice,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=model,
        content="Half a sente",
        updated_at=timezone.now() - timedelta(minutes=5),
    )

    response = await alice_async.get(url(orphan))
    stream = aiter(response.streaming_content)
    while await anext(stream) != KEEPALIVE:
        pass  # the watcher waits: nothing comes from a dead process
    await sync_to_async(replies_interrupt_stale)()  # the sweep
    text, status = sse_text_and_status(b"".join([chunk async for chunk in stream]))

    await orphan.arefresh_from_db()
    assert text == ""  # nothing new: the stored text is all there is
    assert status == "interrupted"
    assert orphan.status == Message.Status.INTERRUPTED
    assert orphan.content == "Half a sente"
    assert "restarted" in orphan.error_text


async def test_it_refuses_another_users_reply(alice_async, bob):
    model = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    conversation = await Conversation.objects.acreate(user=bob, model=model)
    reply = await Message.objects.acreate(conversation=conversation, user=bob, role="assistant", content="secret")

    response = await alice_async.get(url(reply))

    assert response.status_code == 404


async def test_it_refuses_a_malformed_offset(alice_async, upstream):
    reply = await start_reply(alice_async)

    response = await alice_async.get(f"{url(reply)}?offset=-3")

    assert response.status_code == 400
    await watch_reply(alice_async, url(reply))


async def test_anonymous_is_sent_to_login(catalog):
    response = await AsyncClient().get("/c/1/messages/2/stream/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


async def test_post_is_not_allowed(alice_async, upstream):
    reply = await start_reply(alice_async)

    response = await alice_async.post(url(reply))

    assert response.status_code == 405
    await watch_reply(alice_async, url(reply))


async def test_a_reply_being_written_here_is_watched_by_its_owner_alone_without_reading_it_first(
    alice_async, bob, upstream, monkeypatch
):
    """A reply generated in this process is checked against its generator (its chat and user), not the database."""
    reads = []
    own_message = views._own_message
    monkeypatch.setattr(views, "_own_message", lambda *args: reads.append(args[1:]) or own_message(*args))
    upstream.script(
        Reply(chunks=[f"b{i} " for i in range(20)], first_delay=0.2, delay=0.05),
        Reply(chunks=[f"a{i} " for i in range(20)], first_delay=0.2, delay=0.05),
    )
    bob_async = AsyncClient()
    await bob_async.aforce_login(bob)
    bobs = await start_reply(bob_async, "Bob's secret")
    alices = await start_reply(alice_async, "Mine")

    others = [url(bobs), f"/c/{alices.conversation_id}/messages/{bobs.pk}/stream/"]
    refused = [(await alice_async.get(other)).status_code for other in others]
    (text, status), (bob_text, _) = await asyncio.gather(
        watch_reply(alice_async, url(alices)), watch_reply(bob_async, url(bobs))
    )

    assert refused == [404, 404]
    assert (text, status) == ("".join(f"a{i} " for i in range(20)), "complete")
    assert bob_text == "".join(f"b{i} " for i in range(20))
    # Only the refused requests were read from the database: each owner's own came straight from the generator.
    assert reads == [(bobs.conversation_id, bobs.pk), (alices.conversation_id, bobs.pk)]
