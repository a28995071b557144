"""A reply as it is written: its text saved as it grows, its outcome stored with its charge, and replies
whose process died."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.billing.budget import budget_settle
from accounts.billing.prompt_bound import estimate_tokens, prompt_tokens_estimate
from accounts.billing.sweep import orphan_calls_settle
from accounts.models import Reservation, UsageRecord
from accounts.rows import row_update
from conversations.models import Conversation, Message
from conversations.services.context import reply_plan

if TYPE_CHECKING:
    from datetime import timedelta

    from accounts.billing.metered import Charge

INTERRUPTED_TEXT = "The server restarted while this reply was being written. The text so far is kept."


def replies_flush(*, texts: dict[int, str]) -> set[int]:
    """Save the text so far of replies being written (doubles as their heartbeat), in one statement.

    Returns the ids of those no longer live: deleted, reset or ended elsewhere.
    Every reply in flight is saved each STREAM_FLUSH_INTERVAL, and one ORM
    update apiece cost a busy process about a tenth of its CPU.
    """
    if not texts:
        return set()
    table = connection.ops.quote_name(Message._meta.db_table)
    statement = f"""
        WITH texts (id, content) AS (VALUES {", ".join(["(%s, %s)"] * len(texts))})
        UPDATE {table} SET content = texts.content, status = %s, updated_at = %s
        FROM texts
        WHERE {table}.id = texts.id AND {table}.status IN (%s, %s)
        RETURNING {table}.id
    """
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    params = [*itertools.chain.from_iterable(texts.items()), Message.Status.STREAMING, now, *Message.LIVE_STATUSES]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        saved = {row[0] for row in cursor.fetchall()}
    return set(texts) - saved


@dataclass
class ReplyOutcome:
    """How a reply ended; the text and timings are filled in when it is stored."""

    status: str
    text: str = ""
    finish_reason: str = ""
    error_code: str = ""
    error_text: str = ""
    reported_model: str = ""
    time_to_first_token: timedelta | None = None
    duration: timedelta | None = None


@cache
def _reply_update(set_to: tuple[str, ...], added_to: tuple[str, ...]) -> str:
    """reply_record's UPDATE of the reply, if it is still live: fields set to a value, fields added to, and
    usage_estimated. Written out: it runs at the end of every reply, and the ORM took longer to build it."""
    quote = connection.ops.quote_name
    column = {name: quote(Message._meta.get_field(name).column) for name in (*set_to, *added_to, "usage_estimated")}
    sets = [f"{column[name]} = %s" for name in set_to] + [f"{column[name]} = {column[name]} + %s" for name in added_to]
    # An estimated call makes the whole reply's usage an estimate.
    sets.append(f"{column['usage_estimated']} = ({column['usage_estimated']} OR %s)")
    live = ", ".join(["%s"] * len(Message.LIVE_STATUSES))
    return (
        f"UPDATE {quote(Message._meta.db_table)} SET {', '.join(sets)} "
        f"WHERE {quote(Message._meta.pk.column)} = %s AND {quote(Message._meta.get_field('status').column)} IN ({live})"
    )


def reply_record(*, reply_id: int, conversation_id: int, outcome: ReplyOutcome, charge: Charge) -> bool:
    """Store a reply's final text, status, usage and cost; run in the transaction that settles its call.

    The usage is added to what the reply holds: a continued reply is billed its
    calls together (a new one holds nothing). False when the reply is no longer
    live (deleted, reset, or marked by the sweep): its call is still billed,
    with no reply to point to.
    """
    now = timezone.now()
    set_to = {
        "content": outcome.text,
        "status": outcome.status,
        "reported_model": outcome.reported_model,
        "finish_reason": outcome.finish_reason,
        "error_code": outcome.error_code,
        "error_text": outcome.error_text,
        "time_to_first_token": outcome.time_to_first_token,
        "duration": outcome.duration,
        "updated_at": now,
    }
    added_to = {
        "prompt_tokens": charge.prompt_tokens,
        "completion_tokens": charge.completion_tokens,
        "cached_tokens": charge.cached_tokens,
        "cost": charge.cost,
    }
    field = Message._meta.get_field
    values = [field(name).get_db_prep_save(value, connection) for name, value in (set_to | added_to).items()]
    with connection.cursor() as cursor:
        cursor.execute(
            _reply_update(tuple(set_to), tuple(added_to)),
            [*values, charge.estimated, reply_id, *Message.LIVE_STATUSES],
        )
        updated = cursor.rowcount
    if updated:  # the chat moves to the top of the list
        row_update(Conversation, conversation_id, updated_at=now)
    return bool(updated)


def replies_interrupt_stale() -> int:
    """Mark replies left live by a dead process as interrupted, keeping their text and settling their calls.

    Each is billed its prompt's estimate and the estimate of the text its call
    wrote (of a continued reply, what came after the text earlier calls were
    billed for), at the prices its call started with, added to what the reply
    holds; a reply whose reservation expired is billed its prompt counted
    again at today's prices, since the prompt did go upstream.
    """
    count = 0
    for reply in Message.objects.stale_streaming().select_related("model", "conversation"):
        with transaction.atomic():
            reservation = Reservation.objects.filter(message=reply).first()
            if reservation is not None:
                prompt_tokens, prices = reservation.prompt_estimate, reservation.prices()
                completion_tokens = estimate_tokens(reply.content[reservation.text_before :])
            else:
                prompt_tokens, prices = prompt_tokens_estimate(reply_plan(reply=reply).messages), reply.model.prices()
                completion_tokens = estimate_tokens(reply.content)
            if not Message.objects.filter(pk=reply.pk, status__in=Message.LIVE_STATUSES).update(
                status=Message.Status.INTERRUPTED,
                error_code="interrupted",
                error_text=INTERRUPTED_TEXT,
                usage_estimated=True,
                prompt_tokens=F("prompt_tokens") + prompt_tokens,
                completion_tokens=F("completion_tokens") + completion_tokens,
                cost=F("cost") + prices.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
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
                message_id=reply.pk,
                prices=prices,
                call_id=reservation.call_id if reservation else None,
            )
            count += 1
    return count


def dead_processes_sweep(*, spare: str = "") -> tuple[int, int]:
    """What dead processes left: their replies marked interrupted, their other calls settled. Returns both counts.

    `spare`: the name of the process sweeping, which is alive whatever its heartbeat says.
    """
    return replies_interrupt_stale(), orphan_calls_settle(spare=spare)
