"""What the user sees when the upstream fails, at every stage of a reply."""

import socket

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from conversations.models import Message
from tests.conftest import watch_reply
from tests.fake_upstream import Hang, Refuse, Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)


async def send_and_finish(client, text="Hello?") -> Message:
    await client.post("/c/new/messages/", {"text": text})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await watch_reply(client, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    await reply.arefresh_from_db()
    return reply


def page_of(reply: Message) -> str:
    client = Client()
    client.force_login(reply.user)
    response = client.get(f"/c/{reply.conversation_id}/")
    assert response.status_code == 200
    return response.content.decode()


async def assert_failed_visibly(reply: Message, code: str, words: str) -> None:
    """The reply ended in an error the user can read, and their message is still there."""
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == code
    assert words in reply.error_text
    page = await sync_to_async(page_of)(reply)
    assert words in page.replace("&#x27;", "'")
    assert await Message.objects.filter(role="user", content="Hello?", conversation_id=reply.conversation_id).aexists()


async def test_a_rate_limit_before_the_first_token_is_retried(alice_async, upstream):
    upstream.script(Status(429, retry_after=0), Reply(text="Worked on retry."))

    reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.COMPLETE
    assert reply.content == "Worked on retry."
    assert len(upstream.requests) == 2


async def test_server_errors_are_retried_with_backoff(alice_async, upstream):
    upstream.script(Status.server_error(503), Status.server_error(502), Reply(text="Third time lucky."))

    reply = await send_and_finish(alice_async)

    assert reply.content == "Third time lucky."
    assert len(upstream.requests) == 3


async def test_a_lasting_rate_limit_says_when_to_try_again(alice_async, upstream, settings):
    settings.UPSTREAM_RETRIES = 1
    upstream.script(Status(429, retry_after=1), Status(429, retry_after=7))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "rate_limited", "The model provider is rate limiting us. Try again in 7 s.")
    assert len(upstream.requests) == 2  # honoured Retry-After once, then gave up


async def test_a_retry_after_too_long_to_wait_is_not_waited_for(alice_async, upstream):
    upstream.script(Status(429, retry_after=600))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "rate_limited", "Try again in 600 s.")
    assert len(upstream.requests) == 1


async def test_a_lasting_server_error_ends_the_reply(alice_async, upstream, settings):
    settings.UPSTREAM_RETRIES = 2
    upstream.script(*[Status.server_error(500)] * 3)

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "upstream_unavailable", "The model provider is having problems (HTTP 500)")
    assert len(upstream.requests) == 3
    assert (reply.prompt_tokens, reply.completion_tokens, reply.cost) == (0, 0, 0)


async def test_a_rejected_provider_key_is_not_retried(alice_async, upstream):
    upstream.script(Status.invalid_api_key())

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "upstream_auth", "rejected the site's API key")
    assert len(upstream.requests) == 1


async def test_a_chat_too_long_for_the_model_says_so(alice_async, upstream):
    upstream.script(Status.context_length_exceeded(), Status.context_length_exceeded())

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "context_length_exceeded", "longer than the model can read at once")
    assert len(upstream.requests) == 2  # trimmed harder and tried once more by itself


async def test_an_unreachable_provider_says_so(alice_async, upstream, settings):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{closed_port}/v1"

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "connection_failed", "Could not connect to the model provider")


async def test_a_connection_dropped_before_any_answer_says_so(alice_async, upstream):
    upstream.script(Refuse())

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "connection_failed", "closed the connection before answering")


async def test_a_provider_that_never_answers_times_out(alice_async, upstream, settings):
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    upstream.script(Hang(5))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "timeout", "did not answer in time")


async def test_a_provider_that_goes_silent_mid_reply_times_out_keeping_the_text(alice_async, upstream, settings):
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    upstream.script(Reply(chunks=["Partial ", "answer ", "never finished"], hang_after=2))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "timeout", "went silent for 0.5 s")
    assert reply.content == "Partial answer "


async def test_a_stream_cut_mid_reply_keeps_the_text_and_estimates_usage(alice_async, upstream):
    upstream.script(Reply(chunks=["One ", "two ", "three ", "four"], cut_after=2))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "stream_cut", "broke in the middle of the reply")
    assert reply.content == "One two "
    assert reply.usage_estimated
    assert reply.completion_tokens == 2  # "One two " is 8 characters, about 2 tokens


async def test_a_malformed_chunk_ends_the_reply_keeping_the_text(alice_async, upstream):
    upstream.script(Reply(chunks=["Good ", "start ", "then garbage"], malformed_after=2))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "malformed_chunk", "could not read")
    assert reply.content == "Good start "


async def test_a_stream_without_done_is_flagged_as_possibly_incomplete(alice_async, upstream):
    upstream.script(Reply(text="Looks finished.", done=False))

    reply = await send_and_finish(alice_async)

    await assert_failed_visibly(reply, "stream_incomplete", "without confirming it was finished")
    assert reply.content == "Looks finished."
    assert not reply.usage_estimated  # the usage chunk did arrive before the stream ended


async def test_an_error_event_mid_stream_is_shown(alice_async, upstream):
    upstream.script(Reply(chunks=["Some ", "text ", "more"], error_after=2))

    reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.ERROR
    assert "reported an error mid-reply" in reply.error_text
    assert reply.content == "Some text "


async def test_a_reply_the_upstream_sent_without_usage_is_estimated_and_flagged(alice_async, upstream):
    upstream.script(Reply(text="x" * 40, usage=False))

    reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.COMPLETE
    assert reply.usage_estimated
    assert reply.completion_tokens == 10
