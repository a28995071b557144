"""A streamed /v1 answer written to the app in frames, as the web chat's live text is.

daphne writes every piece of a streamed body on its own, a send at the least
(chatsite.serve has Twisted write through to the socket; before, each also
waited a loop turn for the socket, about 40 µs of CPU in all), and a reply
comes a token an event. So the first
events wait, at most one STREAM_FRAME_INTERVAL, for something the app can show
(the first text, a refusal or a tool call's first arguments), which goes at
once, with them; from then on the events go out at most once per interval,
everything that came meanwhile in one write. The events themselves are
unchanged, each whole, in order; the end is written as soon as it is read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

from django.conf import settings

# An event with something for the app to show: a chat chunk's text or refusal, a tool call's arguments, a
# Responses event's delta. The role chunk that opens a chat stream (`"content":""`) is not one.
_SHOWS = re.compile(rb'(?:content|refusal|arguments|delta)":"[^"]')


class _Pump:
    """Reads the events in a task of its own, so that they are read as they come while a frame waits for its time."""

    __slots__ = ("_waiter", "_wake_on_piece", "pieces", "task")  # one per open stream

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        self.pieces: list[bytes] = []
        self._waiter: asyncio.Future | None = None
        self._wake_on_piece = False
        self.task = asyncio.create_task(self._run(events))
        self.task.add_done_callback(self._ended)

    async def _run(self, events: AsyncIterator[bytes]) -> None:
        async for piece in events:
            self.pieces.append(piece)
            if self._wake_on_piece:
                self._wake()

    async def wait(self, until: float | None = None, *, or_piece: bool = False) -> None:
        """Until an event comes (`until` None, or `or_piece`) or the loop's time `until`; no longer than the end."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._wake_on_piece = until is None or or_piece
        timer = loop.call_at(until, self._wake) if until is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def _ended(self, _: asyncio.Task) -> None:
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


async def framed(
    events: AsyncIterator[bytes], read_before: Callable[[float], None] | None = None
) -> AsyncIterator[bytes]:
    """`events` (an async generator, which this closes), joined into frames: see the module's docstring.

    `read_before(t)`, told each next frame's time, may leave the upstream
    unread until just before it (ReplyStream.read_before). Whatever ends the
    frames (the events' end, an error, the app gone) ends the events too,
    their own `finally` run before this returns.
    """
    loop = asyncio.get_running_loop()
    interval = settings.STREAM_FRAME_INTERVAL
    pump = _Pump(events)
    next_frame_at = 0.0  # no frame waits for its time before the app has something to show
    opened_at = 0.0  # when the first event came
    try:
        while True:
            ended = pump.task.done()
            if not ended and not pump.pieces:
                await pump.wait()
                continue
            if not ended and next_frame_at and loop.time() < next_frame_at:
                await pump.wait(until=next_frame_at)
            elif not ended and not next_frame_at and not any(map(_SHOWS.search, pump.pieces)):
                # Nothing to show yet (a chat stream opens with a chunk of its role alone): that goes with the
                # first text, in one write, if the text comes within an interval.
                opened_at = opened_at or loop.time()
                if loop.time() < opened_at + interval:
                    await pump.wait(until=opened_at + interval, or_piece=True)
                    continue
            if pump.pieces:
                frame = b"".join(pump.pieces)
                pump.pieces.clear()
                if next_frame_at or _SHOWS.search(frame):
                    next_frame_at = loop.time() + interval
                    if read_before is not None:
                        read_before(next_frame_at)
                yield frame
            elif pump.task.done():
                pump.task.result()  # what the events raised, raised here
                return
    finally:
        pump.task.cancel()
        await asyncio.gather(pump.task, return_exceptions=True)
        # The task keeps what ended it, whose traceback keeps the pump: a cycle that only the garbage
        # collector's rare full pass would free, with the stream's whole request and connection.
        del pump.task
