"""A new chat's name, made by a short call after its first reply, billed and recorded like any call.

Until then (and for good when CHAT_TITLES is off, the call fails, or the
user's budget has no room) a chat is named after its first message, cut
short. A name the user gave is never replaced: the new name is written only
over that first one.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings

from accounts.billing.metered import MeteredCall, reserve_step
from accounts.models import UsageRecord
from conversations.llm import UpstreamError, complete, on_request_sent
from conversations.models import Conversation, title_from_text
from conversations.replies.fanout import chat_title_announce
from conversations.services.context import ReplyPlan, side_call
from conversations.services.images import content_text

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 24
# Characters of the first message and of the reply that the title call reads.
TITLE_EXCERPT = 1_000
TITLE_INSTRUCTIONS = (
    "Write a short title, at most six words, for the conversation below, in its language. "
    "Answer with the title only: no quotes, no final full stop."
)


def title_wanted(plan: ReplyPlan) -> bool:
    """Whether the chat of this reply is named once the reply is done: titles are on, and it is the first reply."""
    if not settings.CHAT_TITLES or plan.to_summarise or plan.earlier_summary:
        return False
    return [message["role"] for message in plan.messages if message["role"] != "system"] == ["user"]


def _first_message(plan: ReplyPlan) -> str:
    return content_text(plan.messages[-1]["content"])


def title_call(*, plan: ReplyPlan, reply_text: str) -> MeteredCall | None:
    """The title call, reserved; None when the user has renamed the chat already or their budget has no room."""
    first = _first_message(plan)
    if not Conversation.objects.filter(pk=plan.conversation_id, title=title_from_text(first)).exists():
        return None
    transcript = f"User: {first[:TITLE_EXCERPT]}\n\nAssistant: {reply_text[:TITLE_EXCERPT]}"
    return side_call(
        plan=plan, kind=UsageRecord.Kind.TITLE, instructions=TITLE_INSTRUCTIONS, text=transcript,
        max_tokens=TITLE_MAX_TOKENS,
    )  # fmt: skip


def title_clean(text: str) -> str:
    """The model's answer as a chat name: its first line, without quotes, Markdown or a "Title:" label."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = re.sub(r"^\W*title\s*:\s*", "", line.strip(), flags=re.IGNORECASE)
    line = line.strip(" \t#*_`\"'“”‘’«»").rstrip(".")
    return title_from_text(line)


def title_record(*, conversation_id: int, first_message: str, title: str) -> bool:
    """Name the chat, unless the user renamed it meanwhile. Its place in the chat list stays."""
    return bool(
        Conversation.objects.filter(pk=conversation_id, title=title_from_text(first_message)).update(title=title)
    )


async def title_generate(*, plan: ReplyPlan, reply_text: str) -> None:
    """Name the chat of a first reply, and tell its open pages. Failing is harmless: the first name stays."""
    try:
        call = await reserve_step(title_call, plan=plan, reply_text=reply_text)
        if call is None:
            return
        title, named = "", False

        def record(charge) -> None:
            nonlocal named
            named = bool(title) and title_record(
                conversation_id=plan.conversation_id, first_message=_first_message(plan), title=title
            )

        call.on_settle = record
        on_request_sent.set(call.sent)
        async with call:
            try:
                text, call.usage = await complete(
                    model_id=call.model.model_id, messages=call.prompt, max_tokens=call.max_tokens
                )
            except UpstreamError as error:
                logger.info("title for chat %s failed: %s", plan.conversation_id, error.code)
                call.refused()
                return
            call.completion_text = text
            title = title_clean(text)
        if named:
            await chat_title_announce(plan.conversation_id, title)
    except Exception:
        logger.exception("title for chat %s failed", plan.conversation_id)
