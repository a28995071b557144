"""Multi-step writes of accounts: limits (audited), API keys, realtime client secrets.

Budgets, reservations and the ledger are billing's: see accounts/billing/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model, Sum
from django.utils import timezone

from accounts.billing.budget import QuotaExceeded, resets_in
from accounts.models import (
    API_KEY_PREFIX,
    API_KEY_SHOWN,
    ApiKey,
    AuditEntry,
    RealtimeSecret,
    User,
    api_key_hash,
    day_end,
    local_today,
)
from accounts.rows import columns, first_row, instance_from

if TYPE_CHECKING:
    from conversations.models import ChatModel


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


def signup_limits_set(*, user: User) -> None:
    """Give a user who signed up themselves the site's sign-up limits (SIGNUP_*), audited like any limit."""
    limits = {field: value for field, value in settings.SIGNUP_LIMITS.items() if value is not None}
    limits_set(user=user, actor=None, actor_label="sign-up", **limits)


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
    key, _ = api_key_authenticate_reading(secret=secret, ip=ip)
    return key


@dataclass(frozen=True)
class RowAlongside:
    """A row to read in the key's own statement: of `model`, under `alias`, joined ON `on`, which may refer to
    the key `k` and its user `u` (its parameters: `params`); none when no row matches."""

    model: type[Model]
    alias: str
    on: str
    params: list


def api_key_authenticate_reading(
    *, secret: str, ip: str, alongside: RowAlongside | None = None
) -> tuple[ApiKey | None, Model | None]:
    """api_key_authenticate, and the row `alongside` (None if it has none, or the key is not usable), read with
    the key in one round trip."""
    if not secret.startswith(API_KEY_PREFIX):
        return None, None
    now = timezone.now()
    key, row = _active_key(api_key_hash(secret), now, alongside)
    if key is None:
        return None, None
    # To the minute is enough to tell whether a key is in use, and spares busy apps a write per call.
    stale = key.last_used_at is None or now - key.last_used_at > LAST_USE_PRECISION
    if stale or key.last_used_ip != (ip or None):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=ip or None)
        key.last_used_at, key.last_used_ip = now, ip or None
    return key, row


def _active_key(key_hash: str, now: datetime, alongside: RowAlongside | None) -> tuple[ApiKey | None, Model | None]:
    """The key with this hash and its user, if both are active (ApiKey.objects.with_status()'s rule), written out:
    every /v1 request looks its key up."""
    keys, users = ApiKey._meta, User._meta
    more_columns = f", {columns(alongside.model, alongside.alias)}" if alongside else ""
    joined = f"LEFT JOIN {alongside.model._meta.db_table} {alongside.alias} ON {alongside.on}" if alongside else ""
    statement = f"""
        SELECT {columns(ApiKey, "k")}, {columns(User, "u")}{more_columns}
        FROM {keys.db_table} k JOIN {users.db_table} u ON u.id = k.user_id {joined}
        WHERE k.key_hash = %s AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > %s)
            AND u.is_active = %s
    """
    params = alongside.params if alongside else []
    row = first_row(statement, [*params, key_hash, connection.ops.adapt_datetimefield_value(now), True])
    if row is None:
        return None, None
    split, user_end = len(keys.concrete_fields), len(keys.concrete_fields) + len(users.concrete_fields)
    key = instance_from(ApiKey, row[:split])
    key.user = instance_from(User, row[split:user_end])
    if alongside is None:
        return key, None
    rest = row[user_end:]
    pk_index = alongside.model._meta.concrete_fields.index(alongside.model._meta.pk)
    return key, None if rest[pk_index] is None else instance_from(alongside.model, rest)


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
        raise QuotaExceeded("realtime_minutes_per_day", f"{text} {resets_in(day_end(today))}", day_end(today))


def realtime_secret_record(
    *, user: User, model: ChatModel, seconds: int, expires_at: datetime, api_key: ApiKey | None = None
) -> RealtimeSecret:
    """Hold a client secret's lifetime on the user's ledger, before the upstream mints it.

    The rules are checked under the user's row lock, so parallel mints are
    counted one after the other: one that would break a rule raises
    QuotaExceeded and never reaches the upstream. The secret itself is never
    stored. Settle with realtime_secret_minted or realtime_secret_release.
    """
    now = timezone.now()
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        realtime_mint_check(user=locked, seconds=seconds, now=now)
        return locked.realtime_secrets.create(
            api_key=api_key, model=model, seconds=seconds, day=local_today(now), created_at=now, expires_at=expires_at
        )


def realtime_secret_minted(*, secret: RealtimeSecret, expires_at: datetime) -> None:
    """The upstream minted the secret held for: keep the expiry it gave."""
    RealtimeSecret.objects.filter(pk=secret.pk).update(expires_at=expires_at)


def realtime_secret_release(*, secret: RealtimeSecret) -> None:
    """No secret was handed out (the upstream refused, or the caller went away): its minutes are not spent."""
    RealtimeSecret.objects.filter(pk=secret.pk).delete()
