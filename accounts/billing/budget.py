"""The two steps a metered call is made of: hold the worst case before the call, settle the real cost after.

A reservation locks the user's row: parallel calls of one user are checked one
after the other, and none can spend what another holds. Settling writes the
ledger row and the daily rollup in the same transaction as it drops the
reservation. Callers go through MeteredCall (metered.py), not these steps.

Both steps run on every upstream call, so their statements are written out in
ledger_sql.py rather than built by the ORM.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from accounts.billing.ledger_sql import (
    LedgerFigures,
    LockedBudget,
    ledger_figures,
    ledger_settle,
    limits_locked_with_figures,
    reservation_drop,
)
from accounts.models import (
    Limits,
    Reservation,
    UsageRecord,
    User,
    day_end,
    hour_end,
    local_today,
    month_end,
)
from accounts.rows import one_trip_transaction, row_insert_queued

if TYPE_CHECKING:
    from accounts.billing.prices import Prices
    from accounts.models import ApiKey
    from conversations.models import ChatModel

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


def usage_summary(*, user: User) -> UsageSummary:
    now = timezone.now()
    today = local_today(now)
    limits = user.limits()
    figures = ledger_figures(user.pk, now)
    return UsageSummary(
        tokens_today=figures.tokens_today,
        usd_this_month=figures.usd_this_month,
        tokens_per_day=limits.tokens_per_day,
        usd_per_month=limits.usd_per_month,
        day_resets_at=day_end(today),
        month_resets_at=month_end(today),
        tokens_this_hour=figures.tokens_this_hour,
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


def _tokens_room(
    limit: int,
    *,
    window: str,
    code: str,
    resets_at: datetime,
    used: int,
    held: int,
    prompt_tokens: int,
    max_tokens: int,
) -> int:
    """max_tokens cut to the room a token window (today, this hour) has left; QuotaExceeded, saying why in the
    numbers the user's meter shows, when that is under MIN_REPLY_TOKENS."""
    room = limit - used - held - prompt_tokens
    if room >= min(MIN_REPLY_TOKENS, max_tokens):
        return min(max_tokens, room)
    left = limit - used  # what the meter shows left
    if left <= held:
        why = f"You have used your {limit:,} tokens for {window}."
    else:
        why = (
            f"{left:,} of your {limit:,} tokens for {window} are left{_held(f'{held:,}' if held else '')}; "
            f"the chat so far may need up to {prompt_tokens:,} of them and a reply up to {max_tokens:,}."
        )
    raise QuotaExceeded(code, f"{why} {resets_in(resets_at)}", resets_at)


@dataclass(frozen=True)
class Grant:
    reservation_id: int
    max_tokens: int


def budget_reserve(
    *,
    user_id: int,
    model: ChatModel,
    prompt_tokens: int,
    max_tokens: int,
    message_id: int | None = None,
    prices: Prices | None = None,
    kind: str = UsageRecord.Kind.REPLY,
    api_key: ApiKey | None = None,
    call_id: uuid.UUID | None = None,
    owner: str = "",
    prompt_estimate: int | None = None,
    text_before: int = 0,
    locked: LockedBudget | None = None,
) -> Grant:
    """Hold the worst case of a call (prompt plus max_tokens, at its prices) against the user's limits.

    Raises QuotaExceeded when even MIN_REPLY_TOKENS would not fit; when only
    part of max_tokens fits, the grant has the smaller max_tokens to send.
    `locked`: the user's budget, read already in the caller's transaction
    (limits_locked_with_figures), with statements of its own in one round trip.
    """
    prices = prices or model.prices()
    # No savepoint inside a caller's transaction (two round trips): a refusal is raised after the
    # block, which wrote nothing, and the caller goes on to store it (a web reply says it). On its own
    # this is two round trips: BEGIN, the lock and the figures; the insert and COMMIT.
    with one_trip_transaction():
        if locked is None:
            locked = limits_locked_with_figures(user_id, timezone.now())
        now, limits, figures = locked.now, locked.limits, locked.figures
        today = local_today(now)
        try:
            max_tokens = _max_tokens_that_fit(limits, figures, prices, now, prompt_tokens, max_tokens)
        except QuotaExceeded as exceeded:
            refusal = exceeded
        else:
            refusal = None
            reservation = Reservation(
                user_id=user_id,
                message_id=message_id,
                call_id=call_id,
                kind=kind,
                model=model,
                api_key=api_key,
                owner=owner,
                prompt_tokens=prompt_tokens,
                # Without an estimate, the bound is what a swept call is billed.
                prompt_estimate=prompt_tokens if prompt_estimate is None else prompt_estimate,
                text_before=text_before,
                tokens=prompt_tokens + max_tokens,
                cost=prices.cost(prompt_tokens=prompt_tokens, completion_tokens=max_tokens),
                input_price=prices.input,
                output_price=prices.output,
                cached_input_price=prices.cached_input,
                day=today,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.RESERVATION_TTL),
            )
            inserted = row_insert_queued(reservation)
    if refusal is not None:
        raise refusal
    inserted()
    return Grant(reservation_id=reservation.pk, max_tokens=max_tokens)


def _max_tokens_that_fit(
    limits: Limits, figures: LedgerFigures, prices: Prices, now: datetime, prompt_tokens: int, max_tokens: int
) -> int:
    """The most of `max_tokens` that the call may still use within every limit; QuotaExceeded below MIN_REPLY_TOKENS.

    Every live reservation counts, whenever it was made: a call in flight at
    midnight is settled into the new day (or month), so it is held against it too.
    """
    today = local_today(now)
    cost_held, cost_used = figures.usd_held, figures.usd_this_month
    if limits.max_tokens_per_request is not None:
        max_tokens = min(max_tokens, limits.max_tokens_per_request)
    if limits.tokens_per_day is not None:
        max_tokens = _tokens_room(
            limits.tokens_per_day,
            window="today",
            code="tokens_per_day",
            resets_at=day_end(today),
            used=figures.tokens_today,
            held=figures.tokens_held,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
        )
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
        max_tokens = _tokens_room(
            limits.tokens_per_hour,
            window="this hour",
            code="tokens_per_hour",
            resets_at=hour_end(now),
            used=figures.tokens_this_hour,
            held=figures.tokens_held,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
        )
    return max_tokens


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
    message_id: int | None = None,
    api_key: ApiKey | None = None,
    prices: Prices | None = None,
    call_id: uuid.UUID | None = None,
) -> UsageRecord | None:
    """Replace a reservation by what the call really used: a ledger row and the daily rollup, as one change.

    Nothing is recorded for a call that used nothing (it never reached the
    upstream), nor for a call (`call_id`) that is on the ledger already.
    """
    prices = prices or model.prices()
    now = timezone.now()
    today = local_today(now)
    # No lock on the user: a reservation reads what is held and what is spent in one statement,
    # so settling moves the call from one to the other as far as it can see.
    if not prompt_tokens and not completion_tokens:
        if reservation_id is not None:
            reservation_drop(reservation_id)
        return None
    cost = prices.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens)
    record = UsageRecord(
        user_id=user_id,
        kind=kind,
        model=model,
        message_id=message_id,
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
    return record if ledger_settle(reservation_id, record) else None
