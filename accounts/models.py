import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Case, F, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.billing.prices import Prices


@dataclass(frozen=True)
class Limits:
    """A user's effective limits: their own where set, else the site's defaults. None means unlimited."""

    tokens_per_day: int | None
    usd_per_month: Decimal | None
    max_tokens_per_request: int | None
    realtime_minutes_per_day: int | None
    tokens_per_hour: int | None


class UserQuerySet(models.QuerySet):
    def with_usage(self):
        """Annotate tokens today, dollars this month (from the daily rollup) and the limits in force."""
        today = local_today()

        def usage_sum(field: str, **days):
            rows = DailyUsage.objects.filter(user=OuterRef("pk"), **days).values("user")
            return Subquery(rows.annotate(total=Sum(field)).values("total"))

        return self.annotate(
            tokens_today=Coalesce(usage_sum("tokens", day=today), 0),
            usd_this_month=Coalesce(
                usage_sum("cost", day__gte=month_start(today), day__lte=today),
                Value(Decimal(0)),
                output_field=models.DecimalField(max_digits=16, decimal_places=8),
            ),
            tokens_limit=Coalesce(
                "tokens_per_day", Value(settings.QUOTA_TOKENS_PER_DAY, output_field=models.BigIntegerField())
            ),
            usd_limit=Coalesce(
                "usd_per_month",
                Value(settings.QUOTA_USD_PER_MONTH, output_field=models.DecimalField(max_digits=12, decimal_places=2)),
            ),
        )

    def near_a_limit(self, share: Decimal = Decimal("0.8")):
        """Users who have used at least `share` of their daily tokens or monthly dollars."""
        return self.with_usage().filter(
            Q(tokens_limit__isnull=False, tokens_today__gte=F("tokens_limit") * share)
            | Q(usd_limit__isnull=False, usd_this_month__gte=F("usd_limit") * share)
        )


class AccountManager(UserManager.from_queryset(UserQuerySet)):
    pass


class User(AbstractUser):
    """The site's own user model from the first migration, so accounts can grow limits and keys."""

    objects = AccountManager()

    tokens_per_day = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Empty: the site default (QUOTA_TOKENS_PER_DAY)."
    )
    usd_per_month = models.DecimalField(
        "US dollars per month",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
        help_text="Empty: the site default (QUOTA_USD_PER_MONTH).",
    )
    max_tokens_per_request = models.PositiveIntegerField(
        "max tokens per request",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Cap on max_tokens of each call. Empty: the site default (QUOTA_MAX_TOKENS), else the model's.",
    )
    allowed_models = models.ManyToManyField(
        "conversations.ChatModel", blank=True, help_text="None selected: every enabled model."
    )
    realtime_minutes_per_day = models.PositiveIntegerField(
        "realtime minutes per day",
        null=True,
        blank=True,
        help_text="Voice session time minted per day. Empty: the site default (QUOTA_REALTIME_MINUTES_PER_DAY).",
    )
    tokens_per_hour = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Tokens per clock hour, beside the day's. Empty: the site default (QUOTA_TOKENS_PER_HOUR).",
    )

    LIMIT_FIELDS = (
        "tokens_per_hour",
        "tokens_per_day",
        "usd_per_month",
        "max_tokens_per_request",
        "realtime_minutes_per_day",
    )

    def limits(self) -> Limits:
        def own_or_default(name: str):
            value = getattr(self, name)
            return value if value is not None else getattr(settings, f"QUOTA_{name.upper()}")

        return Limits(
            tokens_per_day=own_or_default("tokens_per_day"),
            usd_per_month=own_or_default("usd_per_month"),
            max_tokens_per_request=own_or_default("max_tokens_per_request"),
            realtime_minutes_per_day=own_or_default("realtime_minutes_per_day"),
            tokens_per_hour=own_or_default("tokens_per_hour"),
        )


def local_today(now: datetime | None = None) -> date:
    """Today in the site's TIME_ZONE: the day quotas count in."""
    return timezone.localdate(now or timezone.now())


def hour_start(now: datetime) -> datetime:
    """The start of the site's clock hour (TIME_ZONE) that `now` is in: the hour quotas count in."""
    return timezone.localtime(now).replace(minute=0, second=0, microsecond=0)


def hour_end(now: datetime) -> datetime:
    # Added in UTC: wall-clock arithmetic would land on a missing or doubled hour at a DST change.
    return hour_start(now).astimezone(UTC) + timedelta(hours=1)


def day_end(day: date) -> datetime:
    """The moment the site's day `day` ends (its next midnight), DST-aware."""
    return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))


def month_start(day: date) -> date:
    return day.replace(day=1)


def month_end(day: date) -> datetime:
    first_of_next = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return timezone.make_aware(datetime.combine(first_of_next, time.min))


class UsageRecord(models.Model):
    """One upstream call on record: the ledger that every spending figure adds up from."""

    class Kind(models.TextChoices):
        REPLY = "reply"
        SUMMARY = "summary"
        TITLE = "title"
        API = "api"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="usage_records")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    model = models.ForeignKey("conversations.ChatModel", on_delete=models.PROTECT, related_name="+")
    # Kept when the chat is reset or deleted: the spending stays on record.
    message = models.ForeignKey(
        "conversations.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records"
    )
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0), help_text="USD.")
    estimated = models.BooleanField(default=False, help_text="The upstream sent no usage; counted from the text.")
    day = models.DateField(help_text="The site's day (TIME_ZONE) the call was settled in.")
    created_at = models.DateTimeField(default=timezone.now)
    # A call is settled once, whoever settles it (the call itself, or the sweep after its process died).
    call_id = models.UUIDField(null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "day"], name="usage_user_day"),
            models.Index(fields=["day"], name="usage_day"),
        ]

    def __str__(self):
        return f"{self.kind} by {self.user_id} on {self.day}: ${self.cost}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class DailyUsage(models.Model):
    """Usage records summed per user, model and day, kept in step in the same transaction.

    Quota checks and the spending console read these few rows instead of
    adding up millions of records.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="daily_usage")
    model = models.ForeignKey("conversations.ChatModel", on_delete=models.PROTECT, related_name="+")
    day = models.DateField()
    calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "model", "day"], name="daily_usage_once")]
        indexes = [models.Index(fields=["day"], name="daily_usage_day")]

    def __str__(self):
        return f"{self.day}: user {self.user_id}, {self.tokens} tokens, ${self.cost}"


class Reservation(models.Model):
    """Budget held for a call in flight: its worst case, until it is settled to the real cost.

    It carries what settling needs without the call itself (its prices, its
    prompt's estimate, who made it and which process runs it), so the sweep can
    settle the calls of a process that died exactly as the call would have.
    It stops counting at `expires_at` even if nobody settles it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reservations")
    message = models.ForeignKey(
        "conversations.Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="reservations"
    )
    call_id = models.UUIDField(null=True, blank=True, help_text="The metered call holding it.")
    kind = models.CharField(max_length=10, choices=UsageRecord.Kind.choices, default=UsageRecord.Kind.REPLY)
    model = models.ForeignKey(
        "conversations.ChatModel", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="reservations"
    )
    owner = models.CharField(max_length=100, blank=True, help_text="The server process running the call.")
    prompt_tokens = models.PositiveIntegerField(help_text="The prompt's upper bound.")
    prompt_estimate = models.PositiveIntegerField(default=0, help_text="About how many tokens the prompt has.")
    text_before = models.PositiveIntegerField(
        default=0, help_text="Characters of its reply written by earlier calls, billed with them (a continued reply)."
    )
    tokens = models.PositiveBigIntegerField(help_text="Prompt plus max_tokens: the most the call can use.")
    cost = models.DecimalField(max_digits=16, decimal_places=8)
    input_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    output_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    cached_input_price = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    day = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["user", "expires_at"], name="reservation_user_live"),
            models.Index(fields=["owner"], name="reservation_owner"),
        ]

    def __str__(self):
        return f"{self.tokens} tokens / ${self.cost} for user {self.user_id}"

    def prices(self) -> Prices:
        """The prices the call was started at (reservations from before they were kept: the model's now)."""
        if self.input_price is None:
            return self.model.prices()
        return Prices(input=self.input_price, output=self.output_price, cached_input=self.cached_input_price)


class ServerProcess(models.Model):
    """A server process that runs upstream calls, and when it last said it is alive.

    A process whose heartbeat is older than STREAM_STALE_AFTER has died: the
    sweep settles the calls it left behind.
    """

    name = models.CharField(max_length=100, unique=True)
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name


class AuditEntry(models.Model):
    """Who changed what, when: limits and conversation resets. Written in the transaction of the change."""

    class Action(models.TextChoices):
        LIMIT_CHANGED = "limit_changed", "limit changed"
        CONVERSATION_RESET = "conversation_reset", "conversation reset"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_label = models.CharField(max_length=150, help_text="Who, as it was at the time (a username or a command).")
    action = models.CharField(max_length=30, choices=Action.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_entries",
        help_text="Whose limits or conversation.",
    )
    subject = models.CharField(max_length=200, help_text="The field changed, or the conversation reset.")
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self):
        return f"{self.actor_label}: {self.get_action_display()} {self.subject}"


API_KEY_PREFIX = "csk-"
API_KEY_SHOWN = 12  # characters of a key kept in clear to tell keys apart


def api_key_hash(key: str) -> str:
    # Keys are 256 random bits: a fast hash is enough, unlike for passwords.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def with_status(self):
        """Each key with its `status`: revoked, expired or active. Only an active key of an active user opens /v1."""
        return self.annotate(
            status=Case(
                When(revoked_at__isnull=False, then=Value("revoked")),
                When(expires_at__lte=timezone.now(), then=Value("expired")),
                default=Value("active"),
            )
        )


class ApiKey(models.Model):
    """A user's key for the /v1 API. Only a hash is stored; the key itself is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=API_KEY_SHOWN, help_text="The start of the key, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True)
    allowed_models = models.ManyToManyField(
        "conversations.ChatModel", blank=True, help_text="None selected: every model the user may use."
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def new_secret(cls) -> str:
        return API_KEY_PREFIX + secrets.token_urlsafe(32)


class RealtimeSecret(models.Model):
    """A short-lived Realtime client secret minted for a user: its lifetime counts against their daily minutes.

    The secret itself is never stored.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="realtime_secrets")
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    model = models.ForeignKey("conversations.ChatModel", on_delete=models.PROTECT, related_name="+")
    seconds = models.PositiveIntegerField(help_text="Lifetime granted.")
    day = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "day"], name="realtime_user_day")]

    def __str__(self):
        return f"{self.seconds} s of {self.model_id} for user {self.user_id}"
