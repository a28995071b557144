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

    await asyncio.wait_for(text.changed_since(noted), 1)

    assert text.shown == "Hello"


async def test_one_frame_wakes_every_watcher_waiting():
    text = Text()
    noted = text.changes
    watchers = [asyncio.create_task(text.changed_since(noted)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(watcher.done() for watcher in watchers)

    text.frame("Hi")

    await asyncio.wait_for(asyncio.gather(*watchers), 1)


async def test_a_watcher_whose_wait_timed_out_is_not_held_and_the_next_wait_still_wakes():
    text = Text()
    noted = text.changes
    for _ in range(3):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await text.changed_since(noted)
    assert text._waiting == []

    waiting = asyncio.create_task(text.changed_since(noted))
    await asyncio.sleep(0)
    text.frame("there")
    await asyncio.wait_for(waiting, 1)
