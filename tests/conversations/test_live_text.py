"""LiveText, what watchers in the generating process wait on: no frame is missed, every watcher wakes, and a
watcher that stops waiting (its keep-alive's timeout) is not held by the reply."""

import asyncio

import pytest

from conversations.replies.fanout import LiveText


class Text(LiveText):
    def frame(self, piece: str) -> None:
        self.shown += piece
        self._announce()


async def test_a_frame_announced_between_noting_and_waiting_is_not_missed():
    text = Text()
    noted = text.changes
    text.frame("Hello")  # before the watcher waits

    assert await asyncio.wait_for(text.changed_since(noted, within=60), 1)
    assert text.shown == "Hello"


async def test_one_frame_wakes_every_watcher_waiting():
    text = Text()
    noted = text.changes
    watchers = [asyncio.create_task(text.changed_since(noted, within=60)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(watcher.done() for watcher in watchers)

    text.frame("Hi")

    assert await asyncio.wait_for(asyncio.gather(*watchers), 1) == [True, True, True]


async def test_a_wait_with_no_frame_says_so_and_is_not_held_and_the_next_wait_still_wakes():
    text = Text()
    noted = text.changes
    for _ in range(3):
        assert await text.changed_since(noted, within=0.01) is False  # the watcher sends a keep-alive
    assert text._waiting == []

    waiting = asyncio.create_task(text.changed_since(noted, within=60))
    await asyncio.sleep(0)
    text.frame("there")
    assert await asyncio.wait_for(waiting, 1)


async def test_a_watcher_gone_while_waiting_is_not_held():
    text = Text()
    waiting = asyncio.create_task(text.changed_since(text.changes, within=60))
    await asyncio.sleep(0)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert text._waiting == []


async def test_each_wait_ends_at_its_own_deadline_and_a_frame_still_wakes_the_others():
    text = Text()
    noted = text.changes
    patient = asyncio.create_task(text.changed_since(noted, within=60))
    await asyncio.sleep(0)

    assert await text.changed_since(noted, within=0.01) is False
    assert await text.changed_since(noted, within=0.02) is False
    assert not patient.done()

    text.frame("late")
    assert await asyncio.wait_for(patient, 1)
    assert text._waiting == []


async def test_an_ended_reply_keeps_no_timer_for_its_watchers():
    text = Text()
    waiting = asyncio.create_task(text.changed_since(text.changes, within=60))
    await asyncio.sleep(0)

    text.ended = True
    text.frame("the end")

    assert await asyncio.wait_for(waiting, 1)
    assert text._timer is None
