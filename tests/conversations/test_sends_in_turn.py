"""Sends served in turn: a burst of messages is answered first come, first served, a few at a time.

What a user in a burst notices: the first senders are answered (and watch their
replies) at once instead of all waiting for the last; a page or a Stop is never
held behind the line; a send given up while waiting in line leaves nothing.
"""

import asyncio
import threading

import pytest

from accounts.models import Reservation
from conversations import views
from conversations.models import Conversation, Message
from conversations.replies.runner import STARTS_AT_ONCE
from tests.conftest import HTMX
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

WAITING = 2  # sends beyond those served at once
WITHIN = 10.0  # seconds any wait here may take before the test fails


class HeldSteps:
    """Holds every send's database step until released, noting the order the sends reached it in.

    The order is noted on the event loop, as each send hands its step to a
    worker thread: two sends let through at once start their steps on two
    threads, in either order.
    """

    def __init__(self, monkeypatch):
        self.reached: list[str] = []
        self.release = threading.Event()
        original_step, original_to_end = views._message_create_step, views.db_step_to_end

        def held(request, pk):
            assert self.release.wait(WITHIN), "the test never released the held sends"
            return original_step(request, pk)

        async def noted(function, request, *args, **kwargs):
            if function is held:
                self.reached.append(request.POST["text"])
            return await original_to_end(function, request, *args, **kwargs)

        monkeypatch.setattr(views, "_message_create_step", held)
        monkeypatch.setattr(views, "db_step_to_end", noted)

    async def until_reached(self, count: int) -> None:
        for _ in range(int(WITHIN / 0.01)):
            if len(self.reached) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.reached)} sends reached their step, not {count}")


async def sends_in_order(client, texts: list[str]) -> list[asyncio.Task]:
    """Each text sent as a new chat's first message, one after another (each request started before the next)."""
    tasks = []
    for text in texts:
        tasks.append(asyncio.create_task(client.post("/c/new/messages/", {"text": text}, headers=HTMX)))
        await asyncio.sleep(0.05)  # its request is in the view, or waiting its turn, before the next comes
    return tasks


async def test_sends_beyond_those_served_at_once_wait_their_turn_and_go_in_the_order_they_came(
    alice_async, upstream, monkeypatch
):
    upstream.script(*[Reply(text="ok")] * (STARTS_AT_ONCE + WAITING))
    steps = HeldSteps(monkeypatch)
    texts = [f"message {n}" for n in range(STARTS_AT_ONCE + WAITING)]

    tasks = await sends_in_order(alice_async, texts)
    await steps.until_reached(STARTS_AT_ONCE)
    await asyncio.sleep(0.3)  # time for a send that did not wait its turn to reach its step

    assert steps.reached == texts[:STARTS_AT_ONCE]
    steps.release.set()
    async with asyncio.timeout(WITHIN):
        responses = await asyncio.gather(*tasks)
    assert [response.status_code for response in responses] == [200] * len(texts)
    assert steps.reached == texts  # the ones that waited, in the order they came
    assert await Message.objects.filter(role=Message.Role.USER).acount() == len(texts)


async def test_pages_and_stop_are_not_held_behind_sends_waiting_their_turn(alice_async, upstream, monkeypatch):
    upstream.script(Reply(text="a long answer " * 50, delay=0.05))
    first = await alice_async.post("/c/new/messages/", {"text": "a reply to stop"}, headers=HTMX)
    assert first.status_code == 200
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    upstream.script(*[Reply(text="ok")] * (STARTS_AT_ONCE + WAITING))
    steps = HeldSteps(monkeypatch)
    tasks = await sends_in_order(alice_async, [f"message {n}" for n in range(STARTS_AT_ONCE + WAITING)])
    await steps.until_reached(STARTS_AT_ONCE)

    async with asyncio.timeout(WITHIN / 2):
        page = await alice_async.get(f"/c/{reply.conversation_id}/")
        stopped = await alice_async.post(f"/c/{reply.conversation_id}/messages/{reply.pk}/stop/", headers=HTMX)

    assert page.status_code == 200
    assert stopped.status_code == 204
    assert all(not task.done() for task in tasks)
    steps.release.set()
    async with asyncio.timeout(WITHIN):
        await asyncio.gather(*tasks)


async def test_a_send_given_up_while_waiting_its_turn_stores_and_holds_nothing(alice_async, upstream, monkeypatch):
    upstream.script(*[Reply(text="ok")] * STARTS_AT_ONCE)
    steps = HeldSteps(monkeypatch)
    served = await sends_in_order(alice_async, [f"message {n}" for n in range(STARTS_AT_ONCE)])
    await steps.until_reached(STARTS_AT_ONCE)
    (given_up,) = await sends_in_order(alice_async, ["never mind"])

    given_up.cancel()  # as the server does when its browser goes away
    with pytest.raises(asyncio.CancelledError):
        await given_up
    steps.release.set()
    async with asyncio.timeout(WITHIN):
        await asyncio.gather(*served)
    for _ in range(int(WITHIN / 0.05)):  # until their replies are written
        if not await Message.objects.filter(status__in=Message.LIVE_STATUSES).aexists():
            break
        await asyncio.sleep(0.05)

    assert "never mind" not in steps.reached
    assert not await Message.objects.filter(content="never mind").aexists()
    assert await Conversation.objects.acount() == STARTS_AT_ONCE
    assert not await Reservation.objects.aexists()
