"""A streamed /v1 answer is written in frames (gateway/frames.py): the app gets its first text at once, then
what came meanwhile at most once per STREAM_FRAME_INTERVAL, every event whole, and the end never held."""

import json
import time

import pytest
from django.test import AsyncClient

from accounts.models import UsageRecord
from tests.fake_upstream import Reply
from tests.gateway.test_chat_completions import BODY, post

pytestmark = pytest.mark.django_db(transaction=True)


def events_of(frame: bytes) -> list[bytes]:
    """The SSE events in a frame, each whole: a frame never cuts one."""
    assert frame.endswith(b"\n\n")
    return [event + b"\n\n" for event in frame.removesuffix(b"\n\n").split(b"\n\n")]


def text_of(event: bytes) -> str:
    payload = event.removeprefix(b"data: ").strip()
    if payload == b"[DONE]":
        return ""
    chunk = json.loads(payload)
    return chunk["choices"][0]["delta"].get("content") or "" if chunk["choices"] else ""


async def test_the_first_text_goes_at_once_and_later_ones_wait_for_their_frame_but_not_for_the_end(
    secret, upstream, settings
):
    settings.STREAM_FRAME_INTERVAL = 30  # a frame that waited for its time would hold the test for 30 s
    upstream.script(Reply(chunks=["One", " two", " three"], delay=0.3))
    started = time.monotonic()

    response = await post(AsyncClient(), secret, BODY | {"stream": True, "stream_options": {"include_usage": True}})
    frames = [events_of(frame) async for frame in response.streaming_content]

    assert time.monotonic() - started < 10
    texts = [[text_of(event) for event in frame if text_of(event)] for frame in frames]
    assert ["One"] in texts  # alone in its frame: it was not held for the next
    assert texts[-1] == [" two", " three"]  # held together, and written when the end came
    events = [event for frame in frames for event in frame]
    assert events[-1] == b"data: [DONE]\n\n"
    assert json.loads(events[-2].removeprefix(b"data: "))["usage"]["completion_tokens"] > 0
    assert await UsageRecord.objects.acount() == 1


async def test_without_a_frame_interval_every_event_is_written_as_it_comes(secret, upstream, settings):
    settings.STREAM_FRAME_INTERVAL = 0
    upstream.script(Reply(chunks=["One", " two", " three"], delay=0.05))

    response = await post(AsyncClient(), secret, BODY | {"stream": True})
    frames = [events_of(frame) async for frame in response.streaming_content]

    assert [[text_of(e) for e in frame if text_of(e)] for frame in frames if any(map(text_of, frame))] == [
        ["One"],
        [" two"],
        [" three"],
    ]


def role_of(event: bytes) -> str | None:
    return json.loads(event.removeprefix(b"data: "))["choices"][0]["delta"].get("role")


async def test_the_opening_chunk_goes_with_the_first_text_in_one_write(secret, upstream, settings):
    settings.STREAM_FRAME_INTERVAL = 5
    upstream.script(Reply(chunks=["One", " two"], first_delay=0.2, delay=0.01))

    response = await post(AsyncClient(), secret, BODY | {"stream": True})
    frames = [events_of(frame) async for frame in response.streaming_content]

    assert [role_of(frames[0][0]), text_of(frames[0][1])] == ["assistant", "One"]


async def test_the_opening_chunk_waits_no_longer_than_a_frame_for_text(secret, upstream, settings):
    settings.STREAM_FRAME_INTERVAL = 0.05
    upstream.script(Reply(chunks=["One"], first_delay=0.5))

    response = await post(AsyncClient(), secret, BODY | {"stream": True})
    frames = [events_of(frame) async for frame in response.streaming_content]

    assert [role_of(event) for event in frames[0]] == ["assistant"]  # written before the text came
    assert text_of(frames[1][0]) == "One"
