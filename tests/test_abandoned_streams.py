"""Streams that end are freed as they end: nothing of them waits in a reference cycle.

A cycle is freed only by the garbage collector's full pass, which comes
rarely and, with two thousand streams open, stops the process for about a
second. Until then the request, its response, the upstream's reply and
connection, the reply being generated and what they all hold stay in memory:
about 34 KB of every /v1 stream and 18 KB of every web one, measured over
2,000 streams.
The requests are served by chatsite.asgi's application, their bodies read
from a queue as daphne's are.
"""

import asyncio
import gc
import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponseBase
from django_htmx.middleware import HtmxDetails

from accounts.billing.metered import MeteredCall
from accounts.models import Reservation
from accounts.services import api_key_create
from chatsite.asgi import application
from conversations.llm import ReplyStream
from conversations.models import Message
from conversations.replies.fanout import ReplyBroadcast
from conversations.replies.runner import ReplyGeneration, reply_runner
from tests.asgi_scope import http_scope, logged_in_form_headers
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN = 10.0  # seconds any wait here may take


async def call_abandoned_after_its_first_text(secret: str) -> None:
    """A streamed call whose app goes away once the first text has come."""
    body = json.dumps(
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Count to fifty."}]}
    ).encode()
    from_app: asyncio.Queue = asyncio.Queue()
    from_app.put_nowait({"type": "http.request", "body": body, "more_body": False})
    texts = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body" and b'"content":"' in message.get("body", b""):
            texts.append(message["body"])
            if len(texts) == 1:
                from_app.put_nowait({"type": "http.disconnect"})

    async with asyncio.timeout(WITHIN):
        headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
        await application(http_scope("/v1/chat/completions", body, headers), from_app.get, send)
    assert texts, "the call was abandoned before any text came"


def left_in_cycles(*kinds: type) -> list:
    """The objects of these kinds that only the garbage collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [thing for thing in gc.garbage if isinstance(thing, kinds)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_a_streamed_call_its_app_abandons_leaves_nothing_for_the_garbage_collector(alice, catalog, upstream):
    upstream.default = Reply(chunks=[f"{n}, " for n in range(1, 51)], first_delay=0.01, delay=0.02)
    _, secret = await sync_to_async(api_key_create)(user=alice, name="app")
    await call_abandoned_after_its_first_text(secret)  # the first call of a process sets up what it keeps
    gc.collect()
    gc.disable()  # a pass now would free the cycles before they are looked for
    try:
        for _ in range(3):
            await call_abandoned_after_its_first_text(secret)
        settled = not await Reservation.objects.filter(user=alice).aexists()  # each call settled as it ended
        left = left_in_cycles(HttpRequest, HttpResponseBase, ReplyStream, MeteredCall)
    finally:
        gc.enable()

    assert settled
    assert left == []


async def served(path: str, headers: dict[str, str], *, body: bytes = b"", method: str = "POST") -> bytes:
    """The whole response body of one request whose client stays to its end."""
    from_client: asyncio.Queue = asyncio.Queue()
    from_client.put_nowait({"type": "http.request", "body": body, "more_body": False})
    received = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            received.append(message.get("body", b""))

    async with asyncio.timeout(WITHIN):
        await application(http_scope(path, body, headers, method=method), from_client.get, send)
    return b"".join(received)


async def message_sent_and_its_reply_watched(browser: dict[str, str], text: str, *, stop: bool) -> None:
    """A message sent in a new chat, its reply watched to its end, stopped first if `stop`; the reply's task
    (its chat's title included) waited for."""
    await served("/c/new/messages/", browser, body=f"text={text}".encode())
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alatest("pk")
    reply_path = f"/c/{reply.conversation_id}/messages/{reply.pk}/"
    watch = asyncio.ensure_future(served(f"{reply_path}stream/", browser, method="GET"))
    if stop:
        await asyncio.sleep(0.1)
        await served(f"{reply_path}stop/", browser)
    assert b"event: done" in await watch
    generation = reply_runner().generations.get(reply.pk)
    if generation is not None:
        await asyncio.wait_for(generation.task, WITHIN)


async def test_a_message_and_its_reply_watched_to_the_end_or_stopped_leave_nothing_for_the_garbage_collector(
    alice, catalog, upstream
):
    upstream.default = Reply(chunks=[f"{n}, " for n in range(1, 21)], first_delay=0.01, delay=0.02)
    browser = await logged_in_form_headers(alice) | {"hx-request": "true"}
    await message_sent_and_its_reply_watched(browser, "first", stop=False)  # what the process keeps is set up
    gc.collect()
    gc.disable()  # a pass now would free the cycles before they are looked for
    try:
        await message_sent_and_its_reply_watched(browser, "to the end", stop=False)
        await message_sent_and_its_reply_watched(browser, "stopped", stop=True)
        replies = [reply.status async for reply in Message.objects.filter(role=Message.Role.ASSISTANT).order_by("pk")]
        # Not HttpRequest: the message's request is also reachable from its page's template context and its
        # form, short-lived cycles of Django's own that the collector's young passes free. What a request
        # held that lived on (django-htmx's details, the session) is asked for instead.
        left = left_in_cycles(
            HttpResponseBase, ReplyGeneration, ReplyBroadcast, MeteredCall, ReplyStream, HtmxDetails, SessionBase
        )
    finally:
        gc.enable()

    assert replies == [Message.Status.COMPLETE, Message.Status.COMPLETE, Message.Status.STOPPED]
    assert left == []
