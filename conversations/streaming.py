"""Watching a reply over SSE: the text so far, then live frames, then the end.

A watcher may attach at any time, from any process, and re-attach after a
dropped connection: the SSE event id is the character offset the browser has,
which EventSource sends back as Last-Event-ID.
"""

import asyncio
import json
from collections.abc import AsyncIterator

from channels.layers import get_channel_layer

from conversations import services
from conversations.db import db_step
from conversations.groups import chat_group, control_group, watch_group
from conversations.models import Message

# A comment line this often keeps proxies from closing a quiet stream, and
# gives the watcher a moment to check that the generator is still alive.
KEEPALIVE_SECONDS = 10.0
# Sent first: how long the browser waits before re-attaching after a drop.
RETRY_PREAMBLE = b"retry: 1500\n\n"
KEEPALIVE = b": keep-alive\n\n"


def sse_delta(text: str, offset: int) -> bytes:
    return f"id: {offset}\nevent: delta\ndata: {json.dumps(text)}\n\n".encode()


def sse_done(status: str) -> bytes:
    return f"event: done\ndata: {json.dumps({'status': status})}\n\n".encode()


def _reply_status(reply_id: int) -> str | None:
    """The reply's status after marking it interrupted if its generator is gone; None if it was deleted."""
    reply = Message.objects.filter(pk=reply_id).select_related("conversation").first()
    if reply is None:
        return None
    if reply.is_live:
        services.replies_interrupt_stale(conversation=reply.conversation)
        reply.refresh_from_db(fields=["status"])
    return reply.status


async def reply_events(*, reply_id: int, offset: int) -> AsyncIterator[bytes]:
    """SSE bytes for a reply, starting after `offset` characters the browser already shows."""
    layer = get_channel_layer()
    channel = await layer.new_channel("watch.")
    await layer.group_add(watch_group(reply_id), channel)
    try:
        yield RETRY_PREAMBLE
        status = await db_step(_reply_status, reply_id)
        if status is None:
            return
        if status not in Message.LIVE_STATUSES:
            yield sse_done(status)
            return
        # Joined the group first, then asked: every frame from now on reaches us,
        # and the snapshot covers everything before.
        await layer.group_send(control_group(reply_id), {"type": "reply.snapshot", "reply_to": channel})
        have = offset
        heard = False
        early: list[tuple[int, str]] = []  # frames that arrived before the text they follow
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    message = await layer.receive(channel)
            except TimeoutError:
                status = await db_step(_reply_status, reply_id)
                if status not in Message.LIVE_STATUSES:
                    yield sse_done(status or Message.Status.ERROR)
                    return
                if early or not heard:  # a frame or the snapshot went missing: ask again
                    await layer.group_send(control_group(reply_id), {"type": "reply.snapshot", "reply_to": channel})
                yield KEEPALIVE
                continue
            if message["type"] == "reply.end":
                status = await db_step(_reply_status, reply_id)
                yield sse_done(status or Message.Status.ERROR)
                return
            heard = True
            early.append((message["start"], message["text"]))
            early.sort()
            out = []
            while early and early[0][0] <= have:
                start, text = early.pop(0)
                end = start + len(text)
                if end > have:
                    out.append(text[have - start :])
                    have = end
            if out:
                yield sse_delta("".join(out), have)
    finally:
        await layer.group_discard(watch_group(reply_id), channel)


async def chat_events(*, conversation_id: int) -> AsyncIterator[bytes]:
    """SSE for an open chat page: `reset` when staff reset the chat, so the page shows it at once."""
    layer = get_channel_layer()
    channel = await layer.new_channel("page.")
    await layer.group_add(chat_group(conversation_id), channel)
    try:
        yield RETRY_PREAMBLE
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    message = await layer.receive(channel)
            except TimeoutError:
                yield KEEPALIVE
                continue
            if message["type"] == "chat.reset":
                yield b"event: reset\ndata: {}\n\n"
    finally:
        await layer.group_discard(chat_group(conversation_id), channel)
