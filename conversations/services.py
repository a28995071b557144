"""Multi-step writes for chats and replies. Sync functions; the async paths call them through sync_to_async."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import AuditEntry, Reservation, UsageRecord
from accounts.services import (
    Grant,
    QuotaExceeded,
    audit_record,
    budget_reserve,
    budget_settle,
    estimate_prompt_tokens,
)
from conversations.models import ChatModel, Conversation, Message, estimate_tokens, title_from_text
from conversations.replies.fanout import chat_reset_announce, reply_stop_request

if TYPE_CHECKING:
    from accounts.models import ApiKey, User
    from conversations.generation import Outcome
    from conversations.llm import Usage
    from conversations.openai_request import ChatRequest

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
        "model_id": "gpt-realtime",
        "display_name": "GPT Realtime (voice)",
        "input_price": Decimal("4.00"),
        "output_price": Decimal("16.00"),
        "cached_input_price": Decimal("0.40"),
        "context_window": 32_000,
        "max_output_tokens": 4_096,
        "realtime": True,
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

    gpt-realtime is the Realtime (voice) model: it is offered for client secrets, never in the chat.

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
) -> tuple[Message, ReplyPlan | None]:
    """Store the user's message and a pending reply, and reserve the reply's budget.

    A new chat is created for the first message. Returns the reply and what to
    send upstream for it; when a limit is reached the reply is stored as an
    error saying which limit and when it resets, the plan is None, and nothing
    is sent upstream.
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
        reply = Message.objects.create(
            conversation=conversation,
            user=user,
            role=Message.Role.ASSISTANT,
            status=Message.Status.PENDING,
            model=model,
            created_at=now,
            updated_at=now,
        )
        plan = reply_plan(reply=reply)
        prompt_tokens = estimate_prompt_tokens(plan.messages)
        if plan.to_summarise:
            prompt_tokens += SUMMARY_MAX_TOKENS
        try:
            grant = budget_reserve(
                user=user, model=model, prompt_tokens=prompt_tokens, max_tokens=plan.max_tokens, message=reply
            )
        except QuotaExceeded as exceeded:
            reply.status = Message.Status.ERROR
            reply.error_code = exceeded.code
            reply.error_text = exceeded.user_message
            reply.save(update_fields=["status", "error_code", "error_text"])
            return reply, None
        plan.reservation_id = grant.reservation_id
        plan.max_tokens = grant.max_tokens
    return reply, plan


SUMMARY_PREFIX = "Summary of the earlier part of this conversation:\n"
# Longest summary asked for when earlier turns no longer fit the context window.
SUMMARY_MAX_TOKENS = 400


@dataclass
class ReplyPlan:
    """What is sent upstream for one reply, fixed when it begins (prices included).

    Turns too old to fit the model's context window are left out of
    `messages`; `to_summarise` holds them until the generator has summarised
    them (up to message `summary_upto`).
    """

    reply_id: int
    user_id: int
    conversation_id: int
    model: ChatModel
    messages: list[dict]
    max_tokens: int
    reservation_id: int | None = None
    to_summarise: list[dict] = field(default_factory=list)
    summary_upto: int | None = None
    earlier_summary: str = ""

    def with_summary(self, summary: str) -> list[dict]:
        """The messages to send once the left-out turns are summarised: after the system prompt, the summary."""
        head = [m for m in self.messages if m["role"] == "system" and not m["content"].startswith(SUMMARY_PREFIX)]
        turns = [m for m in self.messages if m["role"] != "system"]
        return [*head, {"role": "system", "content": SUMMARY_PREFIX + summary}, *turns]

    def trimmed_harder(self) -> list[dict]:
        """For a second try after the upstream said the prompt is too long: half the turns, newest kept."""
        head = [m for m in self.messages if m["role"] == "system"]
        turns = [m for m in self.messages if m["role"] != "system"]
        return [*head, *turns[len(turns) // 2 :]] if len(turns) > 1 else self.messages


def _turns_fitting(turns: list[dict], room: int) -> int:
    """How many of the newest turns fit in `room` tokens; the newest one always counts."""
    kept = 0
    for turn in reversed(turns):
        room -= estimate_prompt_tokens([turn])
        if room < 0 and kept:
            break
        kept += 1
    return kept


def reply_plan(*, reply: Message) -> ReplyPlan:
    """What to send upstream for a pending reply: the system prompt, any summary, and as many turns as fit.

    The newest turns are kept; the model's context window must hold them plus
    max_tokens. The newest message is always sent, fitting or not: the
    upstream then says the chat is too long, which the user is told.
    """
    conversation = reply.conversation
    model = reply.model
    head = []
    if conversation.system_prompt.strip():
        head.append({"role": "system", "content": conversation.system_prompt})
    if conversation.summary:
        head.append({"role": "system", "content": SUMMARY_PREFIX + conversation.summary})
    turns = list(
        Message.objects.filter(conversation=conversation, pk__lt=reply.pk, pk__gt=conversation.summary_upto or 0)
        .exclude(content="")
        .values("pk", "role", "content")
    )
    room = model.context_window - model.max_output_tokens - estimate_prompt_tokens(head)
    kept = _turns_fitting(turns, room)
    if kept < len(turns):  # some turns will be summarised: leave room for the summary too
        kept = _turns_fitting(turns, room - SUMMARY_MAX_TOKENS)
    dropped, fitting = turns[: len(turns) - kept], turns[len(turns) - kept :]
    return ReplyPlan(
        reply_id=reply.pk,
        user_id=reply.user_id,
        conversation_id=conversation.pk,
        model=model,
        messages=head + [{"role": t["role"], "content": t["content"]} for t in fitting],
        max_tokens=model.max_output_tokens,
        to_summarise=[{"role": t["role"], "content": t["content"]} for t in dropped],
        summary_upto=dropped[-1]["pk"] if dropped else None,
        earlier_summary=conversation.summary,
    )


def summary_model(*, plan: ReplyPlan) -> ChatModel:
    """The cheap model summaries are made with: SUMMARY_MODEL if it is enabled, else the chat's own."""
    if settings.SUMMARY_MODEL:
        chosen = ChatModel.objects.enabled().filter(model_id=settings.SUMMARY_MODEL).first()
        if chosen:
            return chosen
    return plan.model


def summary_settle(*, plan: ReplyPlan, model: ChatModel, grant: Grant, usage: Usage | None, text: str) -> None:
    """Record the summary call like any other upstream call, and keep the summary on the chat for later turns."""
    estimated = usage is None and bool(text)
    with transaction.atomic():
        budget_settle(
            reservation_id=grant.reservation_id,
            user_id=plan.user_id,
            model=model,
            kind=UsageRecord.Kind.SUMMARY,
            prompt_tokens=usage.prompt_tokens if usage else (estimate_tokens(str(plan.to_summarise)) if text else 0),
            completion_tokens=usage.completion_tokens if usage else estimate_tokens(text),
            cached_tokens=usage.cached_tokens if usage else 0,
            estimated=estimated,
        )
        if text.strip():
            Conversation.objects.filter(pk=plan.conversation_id).update(
                summary=text.strip(), summary_upto=plan.summary_upto
            )


def reply_flush(*, reply_id: int, text: str) -> bool:
    """Save the text so far; doubles as the heartbeat. False if the reply was deleted or ended elsewhere."""
    updated = Message.objects.filter(pk=reply_id, status__in=Message.LIVE_STATUSES).update(
        content=text, status=Message.Status.STREAMING, updated_at=timezone.now()
    )
    return updated == 1


def tokens_spent(
    *, usage: Usage | None, reached_upstream: bool, prompt: list[dict], completion_text: str
) -> tuple[int, int, int, bool]:
    """(prompt, completion, cached tokens, estimated) of a call: the upstream's own figures when it
    sent them, else counted from the text and flagged, and nothing when it never reached the upstream."""
    if usage is not None:
        return usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, False
    if reached_upstream:
        return sum(estimate_tokens(m["content"]) for m in prompt), estimate_tokens(completion_text), 0, True
    return 0, 0, 0, False


def reply_finish(*, plan: ReplyPlan, outcome: Outcome) -> None:
    """Store the final text, status, usage and cost of a reply, and settle its budget, in one transaction.

    Cost uses the upstream's own usage figures when it sent them, else an
    estimate flagged as such; nothing is counted when the request never
    reached the upstream. Prices are those of the plan, fixed at call time.
    The budget is settled even when the chat was deleted meanwhile: the
    tokens were spent.
    """
    stream = outcome.stream
    prompt_tokens, completion_tokens, cached_tokens, estimated = tokens_spent(
        usage=stream.usage if stream else None,
        reached_upstream=stream is not None,
        prompt=plan.messages,
        completion_text=outcome.text,
    )
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=plan.reply_id, status__in=Message.LIVE_STATUSES).update(
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
        budget_settle(
            reservation_id=plan.reservation_id,
            user_id=plan.user_id,
            model=plan.model,
            kind=UsageRecord.Kind.REPLY,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            estimated=estimated,
            message=Message(pk=plan.reply_id) if updated else None,
        )
        if updated:
            Conversation.objects.filter(pk=plan.conversation_id).update(updated_at=now)


def replies_interrupt_stale(*, conversation: Conversation | None = None) -> int:
    """Mark replies left streaming by a dead process as interrupted, keeping their text and settling their budget."""
    stale = Message.objects.stale_streaming().select_related("model")
    if conversation is not None:
        stale = stale.filter(conversation=conversation)
    count = 0
    for reply in stale:
        with transaction.atomic():
            reservation = Reservation.objects.filter(message=reply).first()
            # The prompt went upstream; without the reservation's estimate (it expired), count it again.
            prompt_tokens = (
                reservation.prompt_tokens
                if reservation
                else sum(estimate_tokens(m["content"]) for m in reply_plan(reply=reply).messages)
            )
            completion_tokens = estimate_tokens(reply.content)
            if not Message.objects.filter(pk=reply.pk, status__in=Message.LIVE_STATUSES).update(
                status=Message.Status.INTERRUPTED,
                error_code="interrupted",
                error_text=INTERRUPTED_TEXT,
                usage_estimated=True,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost=reply.model.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
                updated_at=timezone.now(),
            ):
                continue  # finished meanwhile
            budget_settle(
                reservation_id=reservation.pk if reservation else None,
                user_id=reply.user_id,
                model=reply.model,
                kind=UsageRecord.Kind.REPLY,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                estimated=True,
                message=reply,
            )
            count += 1
    return count


def conversation_reset(*, conversation: Conversation, actor: User) -> int:
    """Staff empty a chat: its messages go, the spending records stay, the reset is audited.

    Replies still being written are stopped, and pages with the chat open are
    told to show the reset. Returns how many messages were removed.
    """
    with transaction.atomic():
        live = list(conversation.messages.filter(status__in=Message.LIVE_STATUSES).values_list("pk", flat=True))
        removed, _ = Message.objects.filter(conversation=conversation).delete()
        Conversation.objects.filter(pk=conversation.pk).update(summary="", summary_upto=None, updated_at=timezone.now())
        audit_record(
            actor=actor,
            actor_label=actor.get_username(),
            action=AuditEntry.Action.CONVERSATION_RESET,
            user=conversation.user,
            subject=f"conversation {conversation.pk} “{conversation}”",
            old=f"{removed} messages",
            new="0 messages",
        )

    def tell_everyone():
        for reply_id in live:
            async_to_sync(reply_stop_request)(reply_id)
        async_to_sync(chat_reset_announce)(conversation.pk)

    transaction.on_commit(tell_everyone)
    return removed


@dataclass
class ApiCall:
    """One /v1 call in flight: who, with which key and model, and the budget held for it."""

    key: ApiKey
    model: ChatModel
    grant: Grant
    chat: ChatRequest


def api_call_settle(
    *, call: ApiCall, usage: Usage | None, completion_text: str = "", reached_upstream: bool = True
) -> None:
    """Settle an API call: the upstream's usage, else an estimate from the text (flagged), else nothing."""
    prompt_tokens, completion_tokens, cached_tokens, estimated = tokens_spent(
        usage=usage, reached_upstream=reached_upstream, prompt=call.chat.prompt_text(), completion_text=completion_text
    )
    budget_settle(
        reservation_id=call.grant.reservation_id,
        user_id=call.key.user_id,
        model=call.model,
        kind=UsageRecord.Kind.API,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        estimated=estimated,
        api_key=call.key,
    )
