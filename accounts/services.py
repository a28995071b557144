"""Budgets and limits: reserve before an upstream call, settle after, and audit every limit change.

Every path that calls the upstream (the web chat, summaries, the API) goes
through budget_reserve and budget_settle, so quotas hold the same way
everywhere. A reservation locks the user's row: parallel requests for one user
are checked one after the other, and none can spend what another holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from accounts.models import (
    API_KEY_PREFIX,
    API_KEY_SHOWN,
    ApiKey,
    AuditEntry,
    DailyUsage,
    Reservation,
    UsageRecord,
    User,
    api_key_hash,
    day_end,
    local_today,
    month_end,
    month_start,
)

if TYPE_CHECKING:
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

    @property
    def tokens_percent(self) -> int | None:
        return _percent(self.tokens_today, self.tokens_per_day)

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
    day = DailyUsage.objects.filter(user_id=user_id, day=today).aggregate(tokens=Sum("tokens"))
    month = DailyUsage.objects.filter(user_id=user_id, day__gte=month_start(today), day__lte=today).aggregate(
        cost=Sum("cost")
    )
    return day["tokens"] or 0, month["cost"] or Decimal(0)


def usage_summary(*, user: User) -> UsageSummary:
    today = local_today()
    tokens, cost = _spent(user.pk, today)
    limits = user.limits()
    return UsageSummary(
        tokens_today=tokens,
        usd_this_month=cost,
        tokens_per_day=limits.tokens_per_day,
        usd_per_month=limits.usd_per_month,
        day_resets_at=day_end(today),
        month_resets_at=month_end(today),
    )


def _resets_in(moment: datetime) -> str:
    local = timezone.localtime(moment)
    left = moment - timezone.now()
    hours, minutes = divmod(max(int(left.total_seconds() // 60), 1), 60)
    if hours >= 48:
        wait = f"{round(hours / 24)} days"
    else:
        wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"It resets at {local:%H:%M} on {local:%-d %B} ({settings.TIME_ZONE}), in {wait}."


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """A generous count of a prompt's tokens (three characters each, plus framing), for reserving only."""
    return sum(len(message["content"]) // 3 + 4 for message in messages) + 3


@dataclass(frozen=True)
class Grant:
    reservation_id: int
    max_tokens: int


def budget_reserve(
    *, user: User, model: ChatModel, prompt_tokens: int, max_tokens: int, message: Message | None = None
) -> Grant:
    """Hold the worst case of a call (prompt plus max_tokens, at the model's prices) against the user's limits.

    Raises QuotaExceeded when even MIN_REPLY_TOKENS would not fit; when only
    part of max_tokens fits, the grant has the smaller max_tokens to send.
    """
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
                raise QuotaExceeded(
                    "tokens_per_day",
                    f"You have used your {limits.tokens_per_day:,} tokens for today. {_resets_in(day_end(today))}",
                    day_end(today),
                )
            max_tokens = min(max_tokens, room)
        if limits.usd_per_month is not None:
            room_usd = limits.usd_per_month - cost_used - cost_held - model.cost(prompt_tokens=prompt_tokens)
            per_token = model.output_price / 1_000_000
            room = int(room_usd / per_token) if per_token else max_tokens
            if room_usd < 0 or room < min(MIN_REPLY_TOKENS, max_tokens):
                raise QuotaExceeded(
                    "usd_per_month",
                    f"You have used your ${limits.usd_per_month:,.2f} for this month. {_resets_in(month_end(today))}",
                    month_end(today),
                )
            max_tokens = min(max_tokens, room)
        reservation = Reservation.objects.create(
            user=locked,
            message=message,
            prompt_tokens=prompt_tokens,
            tokens=prompt_tokens + max_tokens,
            cost=model.cost(prompt_tokens=prompt_tokens, completion_tokens=max_tokens),
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
) -> UsageRecord | None:
    """Replace a reservation by what the call really used: a ledger row and the daily rollup, in one transaction.

    Nothing is recorded for a call that used nothing (it never reached the upstream).
    """
    now = timezone.now()
    today = local_today(now)
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user_id).first()
        if reservation_id is not None:
            Reservation.objects.filter(pk=reservation_id).delete()
        if not prompt_tokens and not completion_tokens:
            return None
        cost = model.cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens)
        record = UsageRecord.objects.create(
            user_id=user_id,
            kind=kind,
            model=model,
            message=message,
            api_key=api_key,
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


def audit_record(*, actor: User | None, actor_label: str, action: str, user: User | None, subject: str, old, new):
    AuditEntry.objects.create(
        actor=actor,
        actor_label=actor_label,
        action=action,
        user=user,
        subject=subject,
        old_value="" if old is None else str(old),
        new_value="" if new is None else str(new),
    )


def limits_set(*, user: User, actor: User | None, actor_label: str, **values) -> list[str]:
    """Set some of a user's limits (None: back to the site default), auditing each change.

    Returns the fields that changed.
    """
    changed = []
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        for field, new in values.items():
            if field not in User.LIMIT_FIELDS:
                raise ValueError(f"{field} is not a limit")
            old = getattr(locked, field)
            if old == new:
                continue
            setattr(locked, field, new)
            changed.append(field)
            audit_record(
                actor=actor,
                actor_label=actor_label,
                action=AuditEntry.Action.LIMIT_CHANGED,
                user=locked,
                subject=field,
                old=old,
                new=new,
            )
        if changed:
            locked.save(update_fields=changed)
    return changed


def api_key_create(
    *, user: User, name: str, expires_at: datetime | None = None, allowed_models=()
) -> tuple[ApiKey, str]:
    """Make a key for the user; returns the row and the key itself, which is never stored and shown only now."""
    secret = ApiKey.new_secret()
    with transaction.atomic():
        key = ApiKey.objects.create(
            user=user, name=name, prefix=secret[:API_KEY_SHOWN], key_hash=api_key_hash(secret), expires_at=expires_at
        )
        key.allowed_models.set(allowed_models)
    return key, secret


LAST_USE_PRECISION = timedelta(minutes=1)


def api_key_authenticate(*, secret: str, ip: str) -> ApiKey | None:
    """The usable key with this secret, its use recorded (time and address); None for anything else."""
    if not secret.startswith(API_KEY_PREFIX):
        return None
    key = ApiKey.objects.usable().select_related("user").filter(key_hash=api_key_hash(secret)).first()
    if key is None:
        return None
    now = timezone.now()
    # To the minute is enough to tell whether a key is in use, and spares busy apps a write per call.
    stale = key.last_used_at is None or now - key.last_used_at > LAST_USE_PRECISION
    if stale or key.last_used_ip != (ip or None):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=ip or None)
        key.last_used_at, key.last_used_ip = now, ip or None
    return key


def api_key_revoke(*, key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


# At most one Realtime client secret per user this often (seconds).
REALTIME_MINT_INTERVAL = 5


def realtime_mint_check(*, user: User, seconds: int, now: datetime | None = None) -> None:
    """Raise QuotaExceeded when a client secret lasting `seconds` may not be minted for the user now.

    The rules: one secret per REALTIME_MINT_INTERVAL, and the lifetimes
    granted today (the site's day) stay within the user's realtime minutes.
    """
    now = now or timezone.now()
    today = local_today(now)
    last = (
        user.realtime_secrets.filter(created_at__gt=now - timedelta(seconds=REALTIME_MINT_INTERVAL))
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if last is not None:
        raise QuotaExceeded(
            "realtime_interval",
            f"Only one realtime client secret every {REALTIME_MINT_INTERVAL} seconds: wait a moment and try again.",
            last + timedelta(seconds=REALTIME_MINT_INTERVAL),
        )
    minutes = user.limits().realtime_minutes_per_day
    if minutes is None:
        return
    used = user.realtime_secrets.filter(day=today).aggregate(total=Sum("seconds"))["total"] or 0
    left = max(minutes * 60 - used, 0)
    if seconds > left:
        if left:
            words = " ".join(f"{n} {unit}" for n, unit in ((left // 60, "min"), (left % 60, "s")) if n)
            text = f"Only {words} of your {minutes} realtime minutes for today are left: too few for {seconds} s."
        else:
            text = f"You have used your {minutes} realtime minutes for today."
        raise QuotaExceeded("realtime_minutes_per_day", f"{text} {_resets_in(day_end(today))}", day_end(today))


def realtime_secret_record(
    *, user: User, model: ChatModel, seconds: int, expires_at: datetime, api_key: ApiKey | None = None
) -> None:
    """Put a client secret the upstream has minted on the user's ledger; the secret itself is never stored.

    The rules are checked again under the user's row lock, so parallel mints
    are counted one after the other: one that would break a rule raises
    QuotaExceeded, and its secret must not be handed out.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        realtime_mint_check(user=locked, seconds=seconds, now=now)
        locked.realtime_secrets.create(
            api_key=api_key, model=model, seconds=seconds, day=local_today(now), created_at=now, expires_at=expires_at
        )
