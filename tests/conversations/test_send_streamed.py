"""A message or a control sent as chat_send.js sends them: the answer is one event stream, the turn, then its reply."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import Reservation
from conversations.models import Message
from tests.conftest import HTMX, make_conversation, parse_sse, sse_text_and_status, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import Reply
from tests.images import png_image

pytestmark = pytest.mark.django_db(transaction=True)

STREAM_ASKED = HTMX | {"Accept": "text/event-stream"}


async def open_chat(user):
    return await sync_to_async(make_conversation)(user)


async def body_of(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


def turn_of(body: bytes) -> str:
    """The HTML of the answer's first event, its turn: each of its lines is a `data:` line."""
    event, *data = body.decode().split("\n\n")[0].split("\n")
    assert event == "event: turn"
    return "\n".join(line.removeprefix("data: ") for line in data)


async def test_the_answer_is_the_turn_then_the_reply_as_it_is_written(alice_async, alice, upstream):
    words = [f"w{i} " for i in range(12)]
    upstream.script(Reply(chunks=words, first_delay=0.1, delay=0.05))
    chat = await open_chat(alice)

    response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Count <to> twelve"}, headers=STREAM_ASKED)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = await body_of(response)
    events = parse_sse(body)
    reply = await Message.objects.aget(conversation=chat, role=Message.Role.ASSISTANT)
    turn = parse_html(turn_of(body))
    assert [div.text for div in turn.find_all("div", class_="user-text")] == ["Count <to> twelve"]
    assert turn.find("article", class_="assistant").attrs["data-stream-url"] == (
        f"/c/{chat.pk}/messages/{reply.pk}/stream/"
    )
    deltas = [(json.loads(data), int(event_id)) for event, data, event_id in events if event == "delta"]
    assert len(deltas) > 5  # as the upstream wrote it, not in one piece at the end
    assert "".join(text for text, _ in deltas) == "".join(words) == reply.content
    assert deltas[-1][1] == len(reply.content)  # each id is the reply's length so far: where a watcher resumes
    assert events[-1] == ("done", json.dumps({"status": "complete"}), None)
    assert not await Reservation.objects.filter(user=alice).aexists()


async def test_a_turn_of_many_lines_comes_whole(alice_async, alice, upstream):
    chat = await open_chat(alice)

    response = await alice_async.post(
        f"/c/{chat.pk}/messages/", {"text": "one\r\ntwo\rthree\n\nfour"}, headers=STREAM_ASKED
    )

    turn = turn_of(await body_of(response))
    # As an HTML parser reads the text sent (every line end a line feed), nothing of it cut off.
    assert '<div class="content user-text">one\ntwo\nthree\n\nfour</div>' in turn
    assert parse_html(turn).find("article", class_="assistant").attrs["data-stream-url"]


async def test_the_reply_goes_on_when_the_answer_is_dropped_and_its_own_stream_has_the_rest(
    alice_async, alice, upstream
):
    upstream.script(Reply(chunks=[f"t{i} " for i in range(20)], first_delay=0.05, delay=0.03))
    chat = await open_chat(alice)

    response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Go"}, headers=STREAM_ASKED)
    had, offset = "", 0
    async for chunk in response.streaming_content:
        for event, data, event_id in parse_sse(chunk):
            if event == "delta":
                had, offset = had + json.loads(data), int(event_id)
        if offset:
            break
    await response.streaming_content.aclose()
    reply = await Message.objects.aget(conversation=chat, role=Message.Role.ASSISTANT)
    rest, status = await watch_reply(alice_async, f"/c/{chat.pk}/messages/{reply.pk}/stream/?offset={offset}")

    await reply.arefresh_from_db()
    assert (status, reply.status) == ("complete", Message.Status.COMPLETE)
    assert had + rest == reply.content == "".join(f"t{i} " for i in range(20))
    assert upstream.disconnects == 0
    assert not await Reservation.objects.filter(user=alice).aexists()


async def test_while_the_reply_streams_the_request_has_let_go_of_the_images_it_brought(
    alice_async, alice, upstream, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path / "media"
    upstream.script(Reply(chunks=["A ", "cat."], first_delay=0.1))
    chat = await open_chat(alice)
    picture = SimpleUploadedFile("cat.png", png_image(40, 30), content_type="image/png")

    response = await alice_async.post(
        f"/c/{chat.pk}/messages/", {"text": "Look", "model": "gpt-4o", "images": [picture]}, headers=STREAM_ASKED
    )
    request = response.asgi_request
    uploads = list(request.FILES.values())
    turn = await anext(aiter(response.streaming_content))  # the answer has begun: the reply is on its way
    held = request.__dict__.keys() & {"_files", "_post", "_body"}
    body_closed = request._stream.closed  # Django's spooled body: the images' bytes as they came
    rest = await body_of(response)

    assert turn.startswith(b"event: turn")
    assert len(uploads) == 1 and uploads[0].closed
    assert body_closed and not held  # nothing of the upload is held while the reply is written
    reply = await Message.objects.aget(conversation=chat, role=Message.Role.ASSISTANT)
    assert reply.content == "A cat." and b"event: done" in rest
    question = await Message.objects.aget(conversation=chat, role=Message.Role.USER)
    assert await question.images.acount() == 1  # stored before the answer began


async def test_a_refusal_is_answered_as_htmx_expects_it(alice_async, alice, upstream):
    chat = await open_chat(alice)

    response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": " "}, headers=STREAM_ASKED)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert response["HX-Retarget"] == "#composer-errors"
    assert not await Message.objects.filter(conversation=chat).aexists()


async def test_a_new_chats_first_message_is_answered_with_its_page_then_its_reply(alice_async, upstream):
    upstream.script(Reply(chunks=["Hello ", "there."]))

    response = await alice_async.post("/c/new/messages/", {"text": "Hello"}, headers=STREAM_ASKED)

    body = await body_of(response)
    reply = await Message.objects.aget(role=Message.Role.ASSISTANT)
    assert response["Content-Type"] == "text/event-stream"
    # Where the page goes, as htmx is told it: in the chat's place, at the new chat's address.
    assert (response["HX-Retarget"], response["HX-Reswap"]) == ("#chat", "outerHTML")
    assert response["HX-Push-Url"] == f"/c/{reply.conversation_id}/"
    page = parse_html(turn_of(body))
    assert page.find("main", id="chat") and page.find("form", id="composer")
    assert page.find("article", class_="assistant").attrs["data-stream-url"].endswith(f"/{reply.pk}/stream/")
    assert sse_text_and_status(body) == ("Hello there.", "complete")


async def test_a_page_without_chat_js_gets_the_turn_alone(alice_async, alice, upstream):
    chat = await open_chat(alice)

    response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Hi"}, headers=HTMX)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    reply = await Message.objects.aget(conversation=chat, role=Message.Role.ASSISTANT)
    assert f'data-stream-url="/c/{chat.pk}/messages/{reply.pk}/stream/"' in response.content.decode()
    await watch_reply(alice_async, f"/c/{chat.pk}/messages/{reply.pk}/stream/")


async def finished_reply(client, chat_id: int) -> Message:
    """The chat's newest reply, watched to its end."""
    reply = await Message.objects.filter(conversation_id=chat_id, role=Message.Role.ASSISTANT).alast()
    await watch_reply(client, f"/c/{chat_id}/messages/{reply.pk}/stream/")
    await reply.arefresh_from_db()
    return reply


async def test_continue_is_answered_with_the_branch_then_only_what_follows_the_text_it_had(
    alice_async, alice, upstream
):
    upstream.script(Reply(text="The first half", finish_reason="length"), Reply(chunks=[" and", " the rest."]))
    chat = await open_chat(alice)
    await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Write a long line"})
    cut = await finished_reply(alice_async, chat.pk)

    response = await alice_async.post(f"/c/{chat.pk}/messages/{cut.pk}/continue/", headers=STREAM_ASKED)

    body = await body_of(response)
    article = parse_html(turn_of(body)).find("article", class_="assistant")
    assert (article.attrs["data-offset"], article.find("div", class_="streaming").text) == ("14", "The first half")
    assert sse_text_and_status(body) == (" and the rest.", "complete")
    await cut.arefresh_from_db()
    assert cut.content == "The first half and the rest."


async def test_regenerate_is_answered_with_the_branch_then_the_new_reply(alice_async, alice, upstream):
    upstream.script(Reply(text="First answer."), Reply(chunks=["Second ", "answer."]))
    chat = await open_chat(alice)
    await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Name a colour"})
    first = await finished_reply(alice_async, chat.pk)

    response = await alice_async.post(f"/c/{chat.pk}/messages/{first.pk}/regenerate/", headers=STREAM_ASKED)

    body = await body_of(response)
    second = await Message.objects.filter(conversation=chat, role=Message.Role.ASSISTANT).alast()
    assert second.pk != first.pk
    turn = parse_html(turn_of(body))
    assert [div.text for div in turn.find_all("div", class_="user-text")] == ["Name a colour"]
    assert turn.find("article", class_="assistant").attrs["data-stream-url"].endswith(f"/{second.pk}/stream/")
    assert sse_text_and_status(body) == ("Second answer.", "complete")
