"""Multi-step writes for chats and replies. Sync functions; the async paths call them through sync_to_async."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.models import ChatModel, Conversation, Message, estimate_tokens, title_from_text

if TYPE_CHECKING:
    from accounts.models import User
    from conversations.generation import Outcome

INTERRUPTED_TEXT = "The server restarted while this reply was being written. The text so far is kept."

# Seeded on first run; prices in USD per million tokens. Admins edit them in admin.
CATALOG_SEED = [
    {
        "model_id": "gpt-4o-mini",
        "display_name": "GPT-4o mini",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.60"),
        "cached_input_price": Decimal("0.075"),
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        "local": False,
    },
    {
        "model_id": "gpt-4o",
        "display_name": "GPT-4o",
        "input_price": Decimal("2.50"),
        "output_price": Decimal("10.00"),
        "cached_input_price": Decimal("1.25"),
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        "local": False,
    },
    {
        "model_id": "smollm2-135m",
        "display_name": "SmolLM2 135M (local)",
        "input_price": Decimal(0),
        "output_price": Decimal(0),
        "cached_input_price": None,
        "context_window": 4_096,
        "max_output_tokens": 512,
        "local": True,
    },
]


def catalog_seed() -> list[str]:
    """Add the catalog's seed models that are missing, leaving admins' edits alone. Returns the ids added.

    New rows are enabled when they fit the configured upstream (the local model
    without OPENAI_BASE_URL, the OpenAI models with it). An explicit
    DEFAULT_MODEL becomes the default; otherwise one is set only if none is.
    """
    added = []
    with transaction.atomic():
        for seed in CATALOG_SEED:
            fields = {key: value for key, value in seed.items() if key != "local"}
            _, created = ChatModel.objects.get_or_create(
                model_id=seed["model_id"],
                defaults=fields | {"enabled": seed["local"] == settings.UPSTREAM_IS_LOCAL},
            )
            if created:
                added.append(seed["model_id"])
        wanted = ChatModel.objects.filter(model_id=settings.DEFAULT_MODEL).first()
        has_default = ChatModel.objects.filter(is_default=True).exists()
        if wanted and (settings.DEFAULT_MODEL_EXPLICIT or not has_default):
            ChatModel.objects.filter(is_default=True).exclude(pk=wanted.pk).update(is_default=False)
            ChatModel.objects.filter(pk=wanted.pk).update(is_default=True, enabled=True)
    return added


def message_send(
    *, user: User, conversation: Conversation | None, text: str, model: ChatModel, system_prompt: str = ""
) -> Message:
    """Store the user's message and a pending reply; a new chat is created for the first message.

    Returns the pending reply, which the caller hands to the generator.
    """
    now = timezone.now()
    with transaction.atomic():
        if conversation is None:
            conversation = Conversation.objects.create(
                user=user,
                model=model,
                title=title_from_text(text),
                system_prompt=system_prompt,
                created_at=now,
                updated_at=now,
            )
        else:
            conversation.model = model
            conversation.updated_at = now
            conversation.save(update_fields=["model", "updated_at"])
        Message.objects.create(
            conversation=conversation, user=user, role=Message.Role.USER, content=text, created_at=now, updated_at=now
        )
        return Message.objects.create(
            conversation=conversation,
            user=user,
            role=Message.Role.ASSISTANT,
            status=Message.Status.PENDING,
            model=model,
            created_at=now,
            updated_at=now,
        )


@dataclass
class ReplyPlan:
    """What is sent upstream for one reply, fixed when it begins (prices included)."""

    model: ChatModel
    messages: list[dict]
    max_tokens: int


def reply_plan(*, reply: Message) -> ReplyPlan:
    """What to send upstream for a pending reply: the system prompt and the chat so far."""
    conversation = reply.conversation
    messages = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt})
    earlier = (
        conversation.messages.filter(created_at__lte=reply.created_at)
        .exclude(pk=reply.pk)
        .exclude(content="")
        .values_list("role", "content")
    )
    messages.extend({"role": role, "content": content} for role, content in earlier)
    return ReplyPlan(model=reply.model, messages=messages, max_tokens=reply.model.max_output_tokens)


def reply_flush(*, reply_id: int, text: str) -> bool:
    """Save the text so far; doubles as the heartbeat. False if the reply was deleted or ended elsewhere."""
    updated = Message.objects.filter(pk=reply_id, status__in=Message.LIVE_STATUSES).update(
        content=text, status=Message.Status.STREAMING, updated_at=timezone.now()
    )
    return updated == 1


def reply_finish(*, reply_id: int, plan: ReplyPlan, outcome: Outcome) -> None:
    """Store the final text, status, usage and cost of a reply.

    Cost uses the upstream's own usage figures when it sent them, else an
    estimate flagged as such; nothing is counted when the request never
    reached the upstream. Prices are those of the plan, fixed at call time.
    """
    stream = outcome.stream
    usage = stream.usage if stream else None
    estimated = False
    if usage is not None:
        prompt_tokens, completion_tokens, cached_tokens = (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.cached_tokens,
        )
    elif stream is not None:
        estimated = True
        prompt_tokens = sum(estimate_tokens(m["content"]) for m in plan.messages)
        completion_tokens, cached_tokens = estimate_tokens(outcome.text), 0
    else:
        prompt_tokens = completion_tokens = cached_tokens = 0
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=reply_id, status__in=Message.LIVE_STATUSES).update(
            content=outcome.text,
            status=outcome.status,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cost=plan.model.cost(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens
            ),
            usage_estimated=estimated,
            finish_reason=(stream.finish_reason if stream else "") or "",
            error_code=outcome.error_code,
            error_text=outcome.error_text,
            time_to_first_token=outcome.time_to_first_token,
            duration=outcome.duration,
            updated_at=now,
        )
        if updated:
            Conversation.objects.filter(messages__pk=reply_id).update(updated_at=now)


def reply_fail(*, reply_id: int, text: str, error_text: str) -> None:
    Message.objects.filter(pk=reply_id, status__in=Message.LIVE_STATUSES).update(
        content=text,
        status=Message.Status.ERROR,
        error_code="internal",
        error_text=error_text,
        updated_at=timezone.now(),
    )


def replies_interrupt_stale(*, conversation: Conversation | None = None) -> int:
    """Mark replies left streaming by a dead process as interrupted, keeping their text."""
    stale = Message.objects.stale_streaming()
    if conversation is not None:
        stale = stale.filter(conversation=conversation)
    return stale.update(
        status=Message.Status.INTERRUPTED,
        error_code="interrupted",
        error_text=INTERRUPTED_TEXT,
        updated_at=timezone.now(),
    )
