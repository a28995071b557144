"""A client that goes away at any await of a request leaves nothing held, in-process and deterministic.

Each request is served by Django's own ASGI handler, as daphne serves it. When
the task that runs the view and sends the response reaches its n-th await,
the client disconnects there and the handler cancels the task at that very
await (tests/cancelling.py). This is repeated for n = 1, 2, ... until a
request runs to its end before its n-th await, so every await the request
passes through is a place where it was cut once.
"""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler

from accounts.models import Reservation, UsageRecord
from accounts.services import api_key_create
from conversations.models import Message
from tests.asgi_scope import http_scope, logged_in_form_headers
from tests.cancelling import held_at_await
from tests.conftest import make_conversation
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

MOST_AWAITS = 400  # far more than any request here has: the loop ends when a request is not cut
CLEAN_UP_WITHIN = 5.0
REPLY = Reply(chunks=["One, ", "two, ", "three."], first_delay=0.002, delay=0.001)


async def _awaiting(coroutine):
    return await coroutine


async def serve_cut_at(scope: dict, body: bytes, n: int, answered: list[bytes] | None = None) -> bool:
    """Serve one request through Django's ASGI handler, the client going away at the task's n-th await.

    Returns whether it was cut: False when the request ended before its n-th await. What the client was sent
    of the answer's body goes into `answered`.
    """
    gone = asyncio.Event()
    received = False

    async def receive() -> dict:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if answered is not None and message["type"] == "http.response.body":
            answered.append(message.get("body", b""))

    loop = asyncio.get_running_loop()
    default_factory = loop.get_task_factory()

    def task_factory(loop, coroutine, **kwargs):
        # The handler's own task for the request: the one a disconnect cancels.
        if getattr(coroutine, "__qualname__", "").endswith("handle.<locals>.process_request"):
            loop.set_task_factory(default_factory)
            coroutine = _awaiting(held_at_await(coroutine, n, gone.set))
        return asyncio.Task(coroutine, loop=loop, **kwargs)

    loop.set_task_factory(task_factory)
    try:
        await ASGIHandler()(scope, receive, send)
    finally:
        loop.set_task_factory(default_factory)
    return gone.is_set()


async def cleaned_up(user) -> None:
    """Wait (bounded) until nothing is held and no reply is left live."""
    deadline = time.monotonic() + CLEAN_UP_WITHIN
    while (
        await Reservation.objects.filter(user=user).aexists()
        or await Message.objects.filter(user=user, status__in=Message.LIVE_STATUSES).aexists()
    ):
        assert time.monotonic() < deadline, "budget held, or a reply left live, after the client went away"
        await asyncio.sleep(0.005)


def prompt(n: int) -> str:
    return f"cut at await {n}"


def reached_upstream(upstream, n: int) -> bool:
    return any(request.json["messages"][-1]["content"] == prompt(n) for request in upstream.requests)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
async def test_a_v1_call_cut_at_any_await_leaves_nothing_held_and_bills_only_what_was_sent(
    alice, catalog, upstream, stream
):
    upstream.default = REPLY
    _, secret = await sync_to_async(api_key_create)(user=alice, name="app")
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    billed_at = []

    for n in range(1, MOST_AWAITS):
        body = json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(n)}], "stream": stream}
        ).encode()
        if not await serve_cut_at(http_scope("/v1/chat/completions", body, headers), body, n):
            break
        await cleaned_up(alice)
        billed = await UsageRecord.objects.filter(user=alice).acount() - len(billed_at)
        assert billed in (0, 1), f"cut at await {n}: billed {billed} times"
        if billed:
            assert reached_upstream(upstream, n), f"cut at await {n}: billed, but the request never left"
            billed_at.append(n)

    # Django's middleware no longer awaits a thread hop per hook (chatsite/loop_middleware.py): a call passes
    # fewer awaits than the 11 it did, each still a place where it is cut, before and after it left.
    assert n > 4, "the request was cut at too few awaits to mean anything"
    assert n < MOST_AWAITS - 1, "the request never ran to its end"
    assert not all(reached_upstream(upstream, k) for k in range(1, n)), "no cut fell before the request left"
    assert billed_at, "no cut fell while the upstream was answering"


async def test_a_message_cut_at_any_await_is_answered_all_the_same_once_stored(alice, catalog, upstream):
    upstream.default = REPLY
    headers = await logged_in_form_headers(alice)
    stored_at = []

    for n in range(1, MOST_AWAITS):
        body = f"text=cut+at+await+{n}".encode()
        if not await serve_cut_at(http_scope("/c/new/messages/", body, headers), body, n):
            break
        await cleaned_up(alice)
        if sent := await Message.objects.filter(user=alice, content=prompt(n)).afirst():
            stored_at.append(n)
            reply = await Message.objects.aget(conversation_id=sent.conversation_id, role=Message.Role.ASSISTANT)
            assert reply.status == Message.Status.COMPLETE, f"cut at await {n}: the reply is {reply.status}"
            assert reached_upstream(upstream, n)
            assert await UsageRecord.objects.filter(message=reply).acount() == 1

    # As above, fewer awaits than before (6): the send's own, each still a place where it is cut.
    assert n > 2, "the request was cut at too few awaits to mean anything"
    assert n < MOST_AWAITS - 1, "the request never ran to its end"
    assert len(stored_at) < n - 1, "no cut fell before the message was stored"
    assert stored_at, "no cut fell after the message was stored"
    # Every message stored was answered, the last one (not cut) too, and no other.
    await cleaned_up(alice)
    answered = len(stored_at) + 1
    assert await Message.objects.filter(user=alice, role=Message.Role.USER).acount() == answered
    assert (
        await Message.objects.filter(user=alice, role=Message.Role.ASSISTANT, status=Message.Status.COMPLETE).acount()
        == answered
    )


async def test_a_message_answered_with_its_reply_cut_at_any_await_leaves_nothing_held(alice, catalog, upstream):
    """chat.js's send in an open chat: the answer is the turn and then the reply's events, so the request lives
    as long as the reply, and a cut can fall while it streams too: the reply goes on to its end, settled."""
    upstream.default = REPLY
    conversation = await sync_to_async(make_conversation)(alice)
    path = f"/c/{conversation.pk}/messages/"
    headers = await logged_in_form_headers(alice) | {"hx-request": "true", "accept": "text/event-stream"}
    stored_at, cut_while_streaming = [], 0

    for n in range(1, MOST_AWAITS):
        body = f"text=cut+at+await+{n}".encode()
        answered = []
        if not await serve_cut_at(http_scope(path, body, headers), body, n, answered):
            break
        cut_while_streaming += b"event: turn" in b"".join(answered)
        await cleaned_up(alice)
        if sent := await Message.objects.filter(user=alice, content=prompt(n)).afirst():
            stored_at.append(n)
            reply = await Message.objects.aget(parent=sent)
            assert reply.status == Message.Status.COMPLETE, f"cut at await {n}: the reply is {reply.status}"
            assert reply.content == "One, two, three."
            assert await UsageRecord.objects.filter(message=reply).acount() == 1

    assert n < MOST_AWAITS - 1, "the request never ran to its end"
    assert len(stored_at) < n - 1, "no cut fell before the message was stored"
    assert cut_while_streaming, "no cut fell while the reply streamed in the answer"
    assert b"event: done" in b"".join(answered), "the answer that was not cut did not end with its reply"
    await cleaned_up(alice)
    assert await Message.objects.filter(user=alice, role=Message.Role.USER).acount() == len(stored_at) + 1
