"""Sending a message (which reserves its reply's budget), deleting a chat, and staff resetting one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from accounts.billing.budget import QuotaExceeded
from accounts.billing.metered import MeteredCall
from accounts.models import AuditEntry, UsageRecord
from accounts.services import audit_record
from conversations.branches import branch_end
from conversations.models import ChatModel, Conversation, Message, title_from_text
from conversations.replies.fanout import chat_reset_announce, reply_stop_request
from conversations.services.context import SUMMARY_MAX_TOKENS, ReplyPlan, reply_plan
from conversations.services.images import (
    CheckedImage,
    image_files_delete_on_commit,
    image_files_deleted_on_failure,
    images_attach,
)

if TYPE_CHECKING:
    from accounts.models import User


def message_send(
    *,
    user: User,
    conversation: Conversation | None,
    text: str,
    model: ChatModel,
    system_prompt: str = "",
    images: Sequence[CheckedImage] = (),
) -> tuple[Message, ReplyPlan | None]:
    """Store the user's message (with its images) and a pending reply, and reserve the reply's budget, in one
    transaction: the reservation counts the images as the model will see them.

    A new chat is created for the first message. Returns the reply and what to
    send upstream for it (its metered call reserved); when a limit is reached
    the reply is stored as an error saying which limit and when it resets, the
    plan is None, and nothing is sent upstream.
    """
    now = timezone.now()
    with image_files_deleted_on_failure() as written, transaction.atomic():
        if conversation is None:
            conversation = Conversation.objects.create(
                user=user,
                model=model,
                title=title_from_text(text),
                system_prompt=system_prompt,
                created_at=now,
                updated_at=now,
            )
        elif conversation.model_id != model.pk:
            conversation.model = model
            conversation.save(update_fields=["model"])
        question = Message.objects.create(
            conversation=conversation,
            user=user,
            role=Message.Role.USER,
            content=text,
            parent_id=branch_end(conversation),
            created_at=now,
            updated_at=now,
        )
        images_attach(message=question, images=images, written=written)
        reply = reply_create(question=question, model=model)
        return reply, reply_reserve(reply=reply)


def reply_create(*, question: Message, model: ChatModel) -> Message:
    """A pending reply to a user's message, which now ends the branch on screen."""
    now = timezone.now()
    reply = Message.objects.create(
        conversation=question.conversation,
        user=question.user,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        model=model,
        parent=question,
        created_at=now,
        updated_at=now,
    )
    conversation = question.conversation
    conversation.leaf, conversation.updated_at = reply, now
    Conversation.objects.filter(pk=conversation.pk).update(leaf=reply, updated_at=now)
    return reply


def reply_call(*, reply: Message, continuing: bool = False) -> ReplyPlan:
    """What to send upstream for a reply, with its metered call reserved; QuotaExceeded when it does not fit.

    Run it in the transaction that stores the reply (or its continuation), so
    a reply is never pending without its budget held.
    """
    plan = reply_plan(reply=reply, continuing=continuing)
    call = MeteredCall(
        user=reply.user,
        model=reply.model,
        kind=UsageRecord.Kind.REPLY,
        prompt=plan.messages,
        # Turns to summarise first: the summary joins the prompt.
        prompt_extra_tokens=SUMMARY_MAX_TOKENS if plan.to_summarise else 0,
        max_tokens=plan.max_tokens,
        message=reply,
        text_before=len(plan.prefix),
    )
    call.reserve()
    plan.call = call
    plan.max_tokens = call.max_tokens
    return plan


def reply_reserve(*, reply: Message) -> ReplyPlan | None:
    """Reserve a new reply's call (see reply_call); when a limit is reached the reply says which and when it
    resets, and None is returned: nothing goes upstream."""
    try:
        return reply_call(reply=reply)
    except QuotaExceeded as exceeded:
        reply.status = Message.Status.ERROR
        reply.error_code = exceeded.code
        reply.error_text = exceeded.user_message
        reply.save(update_fields=["status", "error_code", "error_text"])
        return None


def conversation_delete(*, conversation: Conversation) -> None:
    """Delete a chat: its messages, and the files of their images once that is committed."""
    with transaction.atomic():
        image_files_delete_on_commit(Message.objects.filter(conversation=conversation))
        conversation.delete()


def conversation_reset(*, conversation: Conversation, actor: User) -> int:
    """Staff empty a chat: its messages go, the spending records stay, the reset is audited.

    Replies still being written are stopped, and pages with the chat open are
    told to show the reset. Returns how many messages were removed.
    """
    with transaction.atomic():
        live = list(conversation.messages.filter(status__in=Message.LIVE_STATUSES).values_list("pk", flat=True))
        image_files_delete_on_commit(Message.objects.filter(conversation=conversation))
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
