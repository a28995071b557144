"""Sending a message (which reserves its reply's budget), deleting a chat, and staff resetting one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.utils import timezone

from accounts.billing.budget import QuotaExceeded
from accounts.billing.ledger_sql import LockedBudget, limits_locked_with_figures_queued
from accounts.billing.metered import MeteredCall
from accounts.models import AuditEntry, UsageRecord
from accounts.rows import (
    columns,
    first_row,
    insert_statement,
    insert_values,
    inserted,
    instance_from,
    one_round_trip,
    row_insert,
    row_update,
    rows_queued,
)
from accounts.services import audit_record
from conversations.branches import Turn, branch_end, branch_through_queued
from conversations.models import ChatModel, Conversation, Message, chat_model_served, title_from_text, usable_rule
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


@dataclass(frozen=True)
class SendTarget:
    """The chat a message is sent in, with what the send must know of the user's other chats and replies."""

    conversation: Conversation
    reply_live: bool  # a reply in the chat is still being written: no new message until it ends or is stopped
    newest: bool  # the chat is at the top of the user's list already
    model_usable: bool  # the user may still use the chat's model (usable_model), the upstream serving it

    def model(self) -> ChatModel | None:
        """The chat's model, if a message may be sent to it."""
        return self.conversation.model if self.model_usable else None


def send_target(*, user: User, pk: int) -> SendTarget | None:
    """The user's chat `pk` with its model, whether the user may still use that model, whether a reply in it is
    live, and whether it is the user's newest chat, in one written-out statement: each is a query of its own
    through the ORM, on every message sent. None when the user has no such chat."""
    chats, messages, models = Conversation._meta, Message._meta, ChatModel._meta
    quote = connection.ops.quote_name
    chat_id, user_id, model_id = (quote(chats.get_field(name).column) for name in ("id", "user", "model"))
    updated_at = quote(chats.get_field("updated_at").column)
    message_chat, message_status = (quote(messages.get_field(name).column) for name in ("conversation", "status"))
    live = ", ".join(["%s"] * len(Message.LIVE_STATUSES))
    usable, usable_params = usable_rule("m", user=user)
    statement = f"""
        SELECT {columns(Conversation, "c")}, {columns(ChatModel, "m")}, {usable},
            EXISTS (SELECT 1 FROM {messages.db_table} r
                    WHERE r.{message_chat} = c.{chat_id} AND r.{message_status} IN ({live})),
            (SELECT n.{chat_id} FROM {chats.db_table} n WHERE n.{user_id} = c.{user_id}
             ORDER BY n.{updated_at} DESC, n.{chat_id} DESC LIMIT 1) = c.{chat_id}
        FROM {chats.db_table} c JOIN {models.db_table} m ON m.{quote(models.pk.column)} = c.{model_id}
        WHERE c.{chat_id} = %s AND c.{user_id} = %s
    """
    row = first_row(statement, [*usable_params, *Message.LIVE_STATUSES, pk, user.pk])
    if row is None:
        return None
    split = len(chats.concrete_fields)
    conversation = instance_from(Conversation, row[:split])
    conversation.model = instance_from(ChatModel, row[split : split + len(models.concrete_fields)])
    usable = bool(row[-3]) and chat_model_served(conversation.model.model_id)
    return SendTarget(conversation, reply_live=bool(row[-2]), newest=bool(row[-1]), model_usable=usable)


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
            conversation = Conversation(
                user=user,
                model=model,
                title=title_from_text(text),
                system_prompt=system_prompt,
                created_at=now,
                updated_at=now,
            )
            row_insert(conversation)
        elif conversation.model_id != model.pk:
            conversation.model = model
            conversation.save(update_fields=["model"])
        question = Message(
            conversation=conversation,
            user=user,
            role=Message.Role.USER,
            content=text,
            parent_id=branch_end(conversation),
            created_at=now,
            updated_at=now,
        )
        reply = _pending_reply(question, model, now)
        # The turn's rows, the branch it follows and the user's budget, locked: one round trip on PostgreSQL,
        # with the transaction's BEGIN, where each is otherwise a round trip of its own on every message sent.
        with one_round_trip():
            turn_written = _turn_insert_queued(question, reply)
            earlier = branch_through_queued(question.parent_id) if question.parent_id is not None else list
            locked = limits_locked_with_figures_queued(user.pk, now)
        turn_written()
        question.shown_images = images_attach(message=question, images=images, written=written)
        path = [*earlier(), Turn(question.pk, question.role, question.content, has_images=bool(question.shown_images))]
        return reply, reply_reserve(reply=reply, path=path, locked=locked())


def _pending_reply(question: Message, model: ChatModel, now: datetime) -> Message:
    return Message(
        conversation=question.conversation,
        user=question.user,
        role=Message.Role.ASSISTANT,
        status=Message.Status.PENDING,
        model=model,
        created_at=now,
        updated_at=now,
    )


def _turn_insert_queued(question: Message, reply: Message) -> Callable[[], None]:
    """Write a new message and its pending reply, which now ends the branch on screen; their ids are set when
    the answer is called for (see one_round_trip).

    On PostgreSQL in one statement (_turn_statement): each of the three is a
    round trip of its own otherwise, on every message sent. SQLite has no
    INSERT inside WITH: there they are written one after the other, at once.
    """
    if connection.vendor != "postgresql":
        row_insert(question)
        _reply_insert(reply, question)
        return _nothing_to_answer
    statement, fields = _turn_statement()
    values = insert_values(question, fields)
    reply_values = [
        value for field, value in zip(fields, insert_values(reply, fields), strict=True) if field.name != "parent"
    ]
    updated_at = Conversation._meta.get_field("updated_at").get_db_prep_save(reply.updated_at, connection)
    written = rows_queued(statement, [*values, *reply_values, updated_at, reply.conversation_id])

    def answer() -> None:
        [(question_id, reply_id)] = written()
        inserted(question, (question_id,))
        reply.parent = question
        inserted(reply, (reply_id,))
        _leaf_set(reply)

    return answer


def _nothing_to_answer() -> None:
    pass


@cache
def _turn_statement() -> tuple[str, list]:
    """The INSERT of a message and of its reply (parent: the message), and the UPDATE of the chat's leaf (the
    reply), as one statement returning the two new ids; and the message's fields, in their parameters' order.

    The reply takes every parameter the message does but its parent. Foreign keys are checked at the end of
    the statement (Django's are deferred to the commit besides), so the rows may refer to each other.
    """
    quote = connection.ops.quote_name
    question_insert, fields = insert_statement(Message, "")
    names = ", ".join(quote(field.column) for field in fields)
    table, pk = quote(Message._meta.db_table), quote(Message._meta.pk.column)
    reply_values = ", ".join(f"question.{pk}" if field.name == "parent" else "%s" for field in fields)
    chats = Conversation._meta
    leaf, updated_at = (quote(chats.get_field(name).column) for name in ("leaf", "updated_at"))
    statement = f"""
        WITH question AS ({question_insert}),
        reply AS (INSERT INTO {table} ({names}) SELECT {reply_values} FROM question RETURNING {pk}),
        leaf AS (
            UPDATE {quote(chats.db_table)} SET {leaf} = (SELECT {pk} FROM reply), {updated_at} = %s
            WHERE {quote(chats.pk.column)} = %s
        )
        SELECT question.{pk}, reply.{pk} FROM question, reply
    """
    return statement, fields


def reply_create(*, question: Message, model: ChatModel) -> Message:
    """A pending reply to a user's message, which now ends the branch on screen."""
    reply = _pending_reply(question, model, timezone.now())
    _reply_insert(reply, question)
    return reply


def _reply_insert(reply: Message, question: Message) -> None:
    reply.parent = question
    row_insert(reply)  # written out, as the question: the ORM took longer to build each INSERT than to run it
    _leaf_set(reply)
    row_update(Conversation, reply.conversation_id, leaf=reply.pk, updated_at=reply.updated_at)


def _leaf_set(reply: Message) -> None:
    """The reply ends the branch on screen, in the chat instance the caller holds (the caller writes its row)."""
    conversation = reply.conversation
    conversation.leaf, conversation.updated_at = reply, reply.updated_at


def reply_call(
    *, reply: Message, continuing: bool = False, path: list[Turn] | None = None, locked: LockedBudget | None = None
) -> ReplyPlan:
    """What to send upstream for a reply, with its metered call reserved; QuotaExceeded when it does not fit.

    Run it in the transaction that stores the reply (or its continuation), so
    a reply is never pending without its budget held. `path` and `locked`: the
    branch (reply_plan) and the user's budget (budget_reserve), when the
    transaction has read them already.
    """
    plan = reply_plan(reply=reply, continuing=continuing, path=path)
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
    call.reserve(locked=locked)
    plan.call = call
    plan.max_tokens = call.max_tokens
    return plan


def reply_reserve(
    *, reply: Message, path: list[Turn] | None = None, locked: LockedBudget | None = None
) -> ReplyPlan | None:
    """Reserve a new reply's call (see reply_call); when a limit is reached the reply says which and when it
    resets, and None is returned: nothing goes upstream."""
    try:
        return reply_call(reply=reply, path=path, locked=locked)
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
