"""Watching a reply over SSE: the text so far, then live frames, then the end.

A watcher may attach at any time, from any process, and re-attach after a
dropped connection: the SSE event id is the character offset the browser has,
which EventSource sends back as Last-Event-ID. The text comes through the
fan-out protocol (fanout.py); the database is only read, for the status.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator

from django.conf import settings

from conversations.db import db_step
from conversations.models import Conversation, Message
from conversations.replies import fanout

# Sent first, once the watcher listens: how long the browser waits before re-attaching after a drop.
RETRY_PREAMBLE = b"retry: 1500\n\n"
KEEPALIVE = b": keep-alive\n\n"
RESET = b"event: reset\ndata: {}\n\n"
# What ends a line in an event stream. An HTML parser reads each as a line feed too.
SSE_LINE_END = re.compile(r"\r\n|\r|\n")


def sse_delta(text: str, offset: int) -> bytes:
    return f"id: {offset}\nevent: delta\ndata: {json.dumps(text)}\n\n".encode()


def sse_done(status: str) -> bytes:
    return f"event: done\ndata: {json.dumps({'status': status})}\n\n".encode()


def _reply_status(reply_id: int) -> str | None:
    """The reply's status as stored; None if it was deleted."""
    return Message.objects.filter(pk=reply_id).values_list("status", flat=True).first()


async def reply_events(*, reply_id: int, offset: int, first: bytes = b"") -> AsyncIterator[bytes]:
    """SSE bytes for a reply, starting after `offset` characters the browser already shows; `first` (an event)
    before everything."""
    keepalive_after = settings.STREAM_KEEPALIVE
    async with fanout.reply_watch(reply_id) as reply:
        # Sent with the first event when the text is there already: one send, not two, the browser woken
        # once (the second may otherwise wait while it reads the first). Before any wait, on its own.
        preamble = first + RETRY_PREAMBLE
        if reply.remote or reply.ended:
            yield preamble
            preamble = b""
            # Read after looking for the reply here: one generated here cannot end unseen in between.
            status = await db_step(_reply_status, reply_id)
            if status is None:
                return
        else:
            status = Message.Status.STREAMING  # generated here and still going: no need to ask the database
        have = offset
        while status in Message.LIVE_STATUSES:
            changes = reply.changes  # noted before looking: a frame that comes after is not missed
            shown = reply.shown
            if len(shown) > have:
                yield preamble + sse_delta(shown[have:], len(shown))
                preamble = b""
                have = len(shown)
                continue  # more may have come, or the end, while the client took this
            if reply.ended:
                status = reply.status or await db_step(_reply_status, reply_id)
                break
            if preamble:
                yield preamble
                preamble = b""
            await reply.catch_up()
            if not await reply.changed_since(changes, within=keepalive_after):
                yield KEEPALIVE
                # Its process may have died without a word; the sweep then marks it interrupted.
                if reply.remote:
                    status = await db_step(_reply_status, reply_id)
        yield preamble + sse_done(status or Message.Status.ERROR)


def sse_turn(html: str) -> bytes:
    """A sent message's turn, as htmx would have swapped it in: one `data:` line a line of HTML."""
    data = "".join(f"data: {line}\n" for line in SSE_LINE_END.split(html))
    return f"event: turn\n{data}\n".encode()


def turn_then_reply_events(turn_html: str, *, reply_id: int, offset: int) -> AsyncIterator[bytes]:
    """The answer to a request of chat.js's that started a reply: its turn, then the reply after `offset`
    characters (the text the turn shows: a continued reply's). The turn goes in the answer's first write,
    with the reply's first text if that has come, and on its own before any wait if not."""
    return reply_events(reply_id=reply_id, offset=offset, first=sse_turn(turn_html))


def sse_title(title: str) -> bytes:
    return f"event: title\ndata: {json.dumps({'title': title})}\n\n".encode()


def _chat_name(conversation_id: int) -> str | None:
    """The chat's name as the page shows it; None if it was deleted."""
    conversation = Conversation.objects.filter(pk=conversation_id).only("pk", "title").first()
    return None if conversation is None else str(conversation)


async def chat_events(*, conversation_id: int, shown_name: str | None = None) -> AsyncIterator[bytes]:
    """SSE for an open chat page: `title` when the chat is named by its title call, `reset` when staff reset it,
    so the page shows either at once. `shown_name`: the name the page was rendered with; if the chat has
    another by the time the page listens, it is sent first."""
    async with fanout.chat_watch(conversation_id) as page:
        yield RETRY_PREAMBLE
        if shown_name is not None:  # read once listening: a name given while the page loaded is not missed
            name = await db_step(_chat_name, conversation_id)
            if name is not None and name != shown_name:
                yield sse_title(name)
        while True:
            try:
                async with asyncio.timeout(settings.STREAM_KEEPALIVE):
                    await page.news.wait()
            except TimeoutError:
                yield KEEPALIVE
                continue
            page.news.clear()
            if page.title is not None:
                title, page.title = page.title, None
                yield sse_title(title)
            if page.reset:
                page.reset = False
                yield RESET
