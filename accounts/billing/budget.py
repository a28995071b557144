"""The two steps a metered call is made of: hold the worst case before the call, settle the real cost after.

A reservation locks the user's row: parallel calls of one user are checked one
after the other, and none can spend what another holds. Settling writes the
ledger row and the daily rollup in the same transaction as it drops the
reservation. Callers go through MeteredCall (metered.py), not these steps.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from accounts.models import (
    DailyUsage,
    Reservation,
    UsageRecord,
    User,
    day_end,
    hour_end,
    hour_start,
    local_today,
    month_end,
    month_start,
)

if TYPE_CHECKING:
    from accounts.billing.prices import Prices
    from accounts.models import ApiKey
    from conversations.models import ChatModel, Message

# A call is still let through with a smaller max_tokens when less room is left
# than it asked for, but not with fewer tokens than this.
MIN_REPLY_TOKENS = 64


class QuotaExceeded(Exception):
    """A limit would be passed: `user_message` says which and when it resets."""

    def __init__(self, code: str, user_message: str, resets_at: datetime):
        super().__init__(user_message)
        self.code = code
        self.user_message = user_message
        self.resets_at = resets_at


@dataclass(frozen=True)
class UsageSummary:
    tokens_today: int
    usd_this_month: Decimal
    tokens_per_day: int | None
    usd_per_month: Decimal | None
    day_resets_at: datetime
    month_resets_at: datetime
    tokens_this_hour: int
    tokens_per_hour: int | None
    hour_resets_at: datetime

    @property
    def tokens_percent(self) -> int | None:
        return _percent(self.tokens_today, self.tokens_per_day)

    @property
    def tokens_hour_percent(self) -> int | None:
        return _percent(self.tokens_this_hour, self.tokens_per_hour)

    @property
    def usd_percent(self) -> int | None:
        return _percent(self.usd_this_month, self.usd_per_month)


def _percent(used, limit) -> int | None:
    if limit is None:
        return None
    if not limit:
        return 100
    return min(int(used * 100 / limit), 100)


def _spent(user_id: int, today) -> tuple[int, Decimal]:
    """Tokens settled today and dollars settled this month, from the daily rollup."""
    month = DailyUsage.objects.filter(user_id=user_id, day__gte=month_start(today), day__lte=today)
    spent = month.aggregate(tokens=Sum("tokens", filter=Q(day=today)), cost=Sum("cost"))
    return spent["tokens"] or 0, spent["cost"] or Decimal(0)


def _spent_this_hour(user_id: int, now: datetime) -> int:
    """Tokens settled in the current clock hour, from the ledger (the rollup is per day)."""
    rows = UsageRecord.objects.filter(user_id=user_id, day=local_today(now), created_at__gte=hour_start(now))
    return rows.aggregate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")))["tokens"] or 0


def usage_summary(*, user: User) -> UsageSummary:
    now = timezone.now()
    today = local_today(now)
    tokens, cost = _spent(user.pk, today)
    limits = user.limits()
    return UsageSummary(
        tokens_today=tokens,
        usd_this_month=cost,
        tokens_per_day=limits.tokens_per_day,
        usd_per_month=limits.usd_per_month,
        day_resets_at=day_end(today),
        month_resets_at=month_end(today),
        # The hour's figure costs a query of its own: only made when an hourly limit is in force.
        tokens_this_hour=_spent_this_hour(user.pk, now) if limits.tokens_per_hour is not None else 0,
        tokens_per_hour=limits.tokens_per_hour,
        hour_resets_at=hour_end(now),
    )


def resets_in(moment: datetime) -> str:
    """A sentence saying when a limit resets, in the site's time zone."""
    local = timezone.localtime(moment)
    left = moment - timezone.now()
    hours, minutes = divmod(max(int(left.total_seconds() // 60), 1), 60)
    if hours >= 48:
        wait = f"{round(hours / 24)} days"
    else:
        wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"It resets at {local:%H:%M} on {local:%-d %B} ({settings.TIME_ZONE}), in {wait}."


def _held(amount: str) -> str:
    """The part of a refusal that says why less is free than the meter shows (empty: nothing is held)."""
    return f", {amount} of them held for replies still being written" if amount else ""


def _tokens_refusal(limit: int, window: str, *, used: int, held: int, prompt_tokens: int, max_tokens: int) -> str:
    """Why a token window (today, this hour) has no room, in the numbers the user's meter shows."""
    left = limit - used  # what the meter shows left
    if left <= held:
        return f"You have used your {limit:,} tokens for {window}."
    return (
        f"{left:,} of your {limit:,} tokens for {window} are left{_held(f'{held:,}' if held else '')}; "
        f"the chat so far may need up to {prompt_tokens:,} of them and a reply up to {max_tokens:,}."
    )


@dataclass(frozen=True)
class Grant:
    reservation_id: int
    max_tokens: int


def budget_reserve(
    *,
    user: User,
    model: ChatModel,
    prompt_tokens: int,
    max_tokens: int,
    message: Message | None = None,
    prices: Prices | None = None,
    kind: str = UsageRecord.Kind.REPLY,
    api_key: ApiKey | None = None,
    call_id: uuid.UUID | None = None,
    owner: str = "",
    prompt_estimate: int | None = None,
) -> Grant:
    """Hold the worst case of a call (prompt plus max_tokens, at its prices) against the user's limits.

    Raises QuotaExceeded when even MIN_REPLY_TOKENS would not fit; when only
    part of max_tokens fits, the grant has the smaller max_tokens to send.
    """
    prices = prices or model.prices()
    now = timezone.now()
    today = local_today(now)
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        limits = locked.limits()
        if limits.max_tokens_per_request is not None:
            max_tokens = min(max_tokens, limits.max_tokens_per_request)
        Reservation.objects.filter(user=locked, expires_at__lte=now).delete()
        # Every live reservation counts, whenever it was made: a call in flight at midnight
        # is settled into the new day (or month), so it must be held against it too.
        held = Reservation.objects.filter(user=locked).aggregate(tokens=Sum("tokens"), cost=Sum("cost"))
        tokens_held, cost_held = held["tokens"] or 0, held["cost"] or 0
        tokens_used, cost_used = _spent(locked.pk, today)
        if limits.tokens_per_day is not None:
            room = limits.tokens_per_day - tokens_used - tokens_held - prompt_tokens
            if room < min(MIN_REPLY_TOKENS, max_tokens):
                why = _tokens_refusal(
                    limits.tokens_per_day, "today", used=tokens_used, held=tokens_held,
                    prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                )  # fmt: skip
                raise QuotaExceeded("tokens_per_day", f"{why} {resets_in(day_end(today))}", day_end(today))
            max_tokens = min(max_tokens, room)
        if limits.usd_per_month is not None:
            room_usd = limits.usd_per_month - cost_used - cost_held - prices.cost(prompt_tokens=prompt_tokens)
            per_token = prices.output / 1_000_000
            room = int(room_usd / per_token) if per_token else max_tokens
            if room_usd < 0 or room < min(MIN_REPLY_TOKENS, max_tokens):
                left = limits.usd_per_month - cost_used  # what the user's meter shows left
                worst = prices.cost(prompt_tokens=prompt_tokens, completion_tokens=max_tokens)
                why = (
                    f"${left:,.4f} of your ${limits.usd_per_month:,.2f} for this month is left"
                    f"{_held(f'${cost_held:,.4f}' if cost_held else '')}; "
                    f"this message and its reply may cost up to ${worst:,.4f}."
                    if left > cost_held
                    else f"You have used your ${limits.usd_per_month:,.2f} for this month."
                )
                raise QuotaExceeded("usd_per_month", f"{why} {resets_in(month_end(today))}", month_end(today))
            max_tokens = min(max_tokens, room)
        if limits.tokens_per_hour is not None:
            used_this_hour = _spent_this_hour(locked.pk, now)
            room = limits.tokens_per_hour - used_this_hour - tokens_held - prompt_tokens
            if room < min(MIN_REPLY_TOKENS, max_tokens):
                why = _tokens_refusal(
                    limits.tokens_per_hour, "this hour", used=used_this_hour, held=tokens_held,
                    prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                )  # fmt: skip
                raise QuotaExceeded("tokens_per_hour", f"{why} {resets_in(hour_end(now))}", hour_end(now))
            max_tokens = min(max_tokens, room)
        reservation = Reservation.objects.create(
            user=locked,
            message=message,
            call_id=call_id,
            kind=kind,
            model=model,
            api_key=api_key,
            owner=owner,
            prompt_tokens=prompt_tokens,
            # Without an estimate, the bound is what a swept call is billed.
            prompt_estimate=prompt_tokens if prompt_estimate is None else prompt_estimate,
            tokens=prompt_tokens + max_tokens,
            cost=prices.cost(prompt_tokens=prompt_tokens, completion_tokens=max_tokens),
            input_price=prices.input,
            output_price=prices.output,
            cached_input_price=prices.cached_input,
            day=today,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.RESERVATION_TTL),
        )
    return Grant(reservation_id=reservation.pk, max_tokens=max_tokens)


def budget_settle(
    *,
    reservation_id: int | None,
    user_id: int,
    model: ChatModel,
    kind: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int = 0,
    estimated: bool = False,
    message: Message | None = None,
    api_key: ApiKey | None = None,
    prices: Prices | None = None,
    call_id: uuid.UUID | None = None,
) -> UsageRecord | None:
    """Replace a reservation by what the call really used: a ledger row and the daily rollup, in one transaction.

    Nothing is recorded for a call that used nothing (it never reached the
    upstream), nor for a call (`call_id`) that is on the ledger already.
    """
    prices = prices or model.prices()
    now = timezone.now()
    today = local_today(now)
    # Callers settle inside a transaction of their own (with the reply's record, say), and none
    # carries on after an error in here: a savepoint would only cost two more round trips.
    with transaction.atomic(savepoint=False):
        User.objects.select_for_update().filter(pk=user_id).first()
        if reservation_id is not None:
            Reservation.objects.filter(pk=reservation_id).delete()
        if not prompt_tokens and not completion_tokens:
            return None
        if call_id is not None and UsageRecord.objects.filter(call_id=call_id).exists():
            return None
        cost = prices.cost(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens
        )
        record = UsageRecord.objects.create(
            user_id=user_id,
            kind=kind,
            model=model,
            message=message,
            api_key=api_key,
            call_id=call_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            cost=cost,
            estimated=estimated,
            day=today,
            created_at=now,
        )
        tokens = prompt_tokens + completion_tokens
        updated = DailyUsage.objects.filter(user_id=user_id, model=model, day=today).update(
            calls=F("calls") + 1, tokens=F("tokens") + tokens, cost=F("cost") + cost
        )
        if not updated:
            DailyUsage.objects.create(user_id=user_id, model=model, day=today, calls=1, tokens=tokens, cost=cost)
    return record
