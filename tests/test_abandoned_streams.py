"""A streamed /v1 call its app abandons is freed as it ends: nothing of it waits in a reference cycle.

A cycle is freed only by the garbage collector's full pass, which comes
rarely and, with two thousand streams open, stops the process for about a
second. Until then the call's response, its upstream reply and connection,
and what they hold stay in memory. (Django's request is in a cycle of its
own, through what its middleware attach to it: the session's user, messages,
htmx details; a few objects, no buffers.) The call is served by chatsite.asgi's
application, its body read from a queue as daphne's is.
"""

import asyncio
import gc
import json

import pytest
from asgiref.sync import sync_to_async
from django.http import HttpResponseBase

from accounts.models import Reservation
from accounts.services import api_key_create
from chatsite.asgi import application
from conversations.llm import ReplyStream
from tests.asgi_scope import http_scope
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
        left = left_in_cycles(HttpResponseBase, ReplyStream)
    finally:
        gc.enable()

    assert settled
    assert left == []
