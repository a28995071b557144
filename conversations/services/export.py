"""A chat written out for its owner to keep: Markdown to read, JSON for other tools. Times in the site's zone."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from django.utils.text import slugify

from conversations.models import Conversation, Message

EXPORT_FORMAT_VERSION = 1


def export_filename(conversation: Conversation, extension: str) -> str:
    return f"{slugify(conversation.title)[:60] or 'chat'}-{conversation.pk}.{extension}"


def _messages(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.select_related("model").prefetch_related("images"))


def _time(moment: datetime) -> str:
    return timezone.localtime(moment).isoformat(timespec="seconds")


def _shown_time(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def _totals(messages: list[Message]) -> dict:
    replies = [message for message in messages if message.role == Message.Role.ASSISTANT]
    totals = {
        "prompt_tokens": sum(reply.prompt_tokens for reply in replies),
        "completion_tokens": sum(reply.completion_tokens for reply in replies),
    }
    if settings.SHOW_COSTS:  # the export shows what the chat shows: costs only where the admin turned them on
        totals["cost_usd"] = str(sum((reply.cost for reply in replies), Decimal(0)))
    return totals


def chat_export_json(conversation: Conversation) -> dict:
    """Everything the owner can see of a chat, with each reply's model, tokens and, with SHOW_COSTS, cost (USD)."""
    messages = _messages(conversation)
    return {
        "format": EXPORT_FORMAT_VERSION,
        "id": conversation.pk,
        "title": str(conversation),
        "model": conversation.model.model_id,
        "system_prompt": conversation.system_prompt,
        "created_at": _time(conversation.created_at),
        "updated_at": _time(conversation.updated_at),
        "totals": _totals(messages),
        "messages": [_message_json(message) for message in messages],
    }


def _message_json(message: Message) -> dict:
    entry = {"role": message.role, "content": message.content, "created_at": _time(message.created_at)}
    if images := message.images.all():
        entry["attachments"] = [
            {"name": image.name, "content_type": image.content_type, "width": image.width, "height": image.height}
            for image in images
        ]
    if message.role == Message.Role.ASSISTANT:
        entry |= {
            "status": message.status,
            "model": message.model.model_id if message.model else None,
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "cached_tokens": message.cached_tokens,
            "usage_estimated": message.usage_estimated,
            "finish_reason": message.finish_reason,
            "error": message.error_text,
        }
        if settings.SHOW_COSTS:
            entry["cost_usd"] = str(message.cost)
    return entry


def chat_export_markdown(conversation: Conversation) -> str:
    messages = _messages(conversation)
    totals = _totals(messages)
    lines = [
        f"# {conversation}",
        "",
        f"- Model: {conversation.model.display_name} (`{conversation.model.model_id}`)",
        f"- Started: {_shown_time(conversation.created_at)}; last activity: {_shown_time(conversation.updated_at)}",
        f"- Tokens: {totals['prompt_tokens']:,} in / {totals['completion_tokens']:,} out"
        + (f"; cost ${totals['cost_usd']}" if "cost_usd" in totals else ""),
        "",
    ]
    if conversation.system_prompt:
        lines += ["## System prompt", "", *(f"> {line}" for line in conversation.system_prompt.splitlines()), ""]
    for message in messages:
        if message.role == Message.Role.USER:
            lines += [f"## You · {_shown_time(message.created_at)}", "", message.content, ""]
            if images := message.images.all():
                lines += [f"*Attached: {', '.join(image.name for image in images)}*", ""]
            continue
        model = message.model.display_name if message.model else "Assistant"
        lines += [f"## {model} · {_shown_time(message.created_at)}", "", message.content, ""]
        if message.error_text:
            lines += [f"> {message.error_text}", ""]
        estimated = " (estimated)" if message.usage_estimated else ""
        cost = f" · ${message.cost}" if settings.SHOW_COSTS else ""
        lines += [f"*{message.prompt_tokens:,} in / {message.completion_tokens:,} out{cost}{estimated}*", ""]
    return "\n".join(lines)
