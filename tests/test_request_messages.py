"""RequestMessages, the queue daphne hands a request's messages to the app through (chatsite.serve): every
message reaches the app once, in order, whether it came before the app read or while it waited."""

import asyncio

import pytest

from chatsite.request_messages import RequestMessages

BODY = {"type": "http.request", "body": b"hello", "more_body": False}
DISCONNECT = {"type": "http.disconnect"}


async def test_messages_put_before_the_app_reads_come_out_in_order():
    messages = RequestMessages()
    messages.put_nowait(BODY)
    messages.put_nowait(DISCONNECT)

    assert [await messages.get(), await messages.get()] == [BODY, DISCONNECT]


async def test_an_app_waiting_gets_the_message_put_next():
    messages = RequestMessages()
    reading = asyncio.create_task(messages.get())
    await asyncio.sleep(0)
    assert not reading.done()

    messages.put_nowait(DISCONNECT)

    assert await asyncio.wait_for(reading, 1) == DISCONNECT


async def test_a_reader_cancelled_while_waiting_takes_nothing_from_the_next():
    messages = RequestMessages()
    gone = asyncio.create_task(messages.get())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    messages.put_nowait(BODY)

    assert await asyncio.wait_for(messages.get(), 1) == BODY


async def test_a_reader_woken_then_cancelled_leaves_its_message_to_the_other_reader():
    messages = RequestMessages()
    first = asyncio.create_task(messages.get())
    second = asyncio.create_task(messages.get())
    await asyncio.sleep(0)

    messages.put_nowait(DISCONNECT)  # wakes the first, which is cancelled before it runs
    first.cancel()

    assert await asyncio.wait_for(second, 1) == DISCONNECT
    with pytest.raises(asyncio.CancelledError):
        await first
