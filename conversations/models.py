import secrets
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import connection, models
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property

from accounts.billing.image_tokens import ImageTokenRule
from accounts.billing.prices import Prices
from accounts.rows import columns, first_row, instance_from
from conversations.upstream import served_model_ids


class ChatModelQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)

    def for_chat(self):
        return self.enabled().filter(realtime=False, embedding=False)

    def served(self):
        """The models the upstream lists (see conversations/upstream.py): no other model answers under their names."""
        model_ids = served_model_ids()
        return self if model_ids is None else self.filter(model_id__in=model_ids)

    def usable_by(self, user):
        """Enabled chat models the upstream serves that the user may pick."""
        return self.for_chat().served().allowed_to(user)

    def allowed_to(self, user):
        """All of these models, or only those an admin allowed the user."""
        return self.narrowed_to(user.allowed_models)

    def narrowed_to(self, chosen):
        """These models, or only those of a many-to-many list (a user's or a key's allowed models) when it has any.

        One query either way: whether the list is empty is asked inside it, not
        in a round trip of its own before it. The two subqueries are written
        out: built by the ORM they cost about 0.5 ms of CPU each, on every /v1
        call and message. They refer only to the list's own table, so the query
        may be nested in another under any alias.
        """
        listed = model_list_query(chosen.instance._meta.model)
        unlisted = RawSQL(f"NOT EXISTS ({listed})", [chosen.instance.pk], output_field=models.BooleanField())
        return self.filter(Q(pk__in=RawSQL(listed, [chosen.instance.pk])) | Q(unlisted))

    def default(self) -> "ChatModel | None":
        enabled = self.for_chat()
        return enabled.filter(is_default=True).first() or enabled.order_by("display_name").first()


def model_list_query(owner: type[models.Model], owner_id: str = "%s") -> str:
    """The model ids of a user's or a key's list of allowed models (`owner`: User or ApiKey), as SQL whose
    `owner_id` is the owner's id: a parameter, or a column of the statement it is nested in."""
    field = owner._meta.get_field("allowed_models")
    return f"SELECT {field.m2m_reverse_name()} FROM {field.m2m_db_table()} WHERE {field.m2m_column_name()} = {owner_id}"


@dataclass(frozen=True)
class ReadAlongside:
    """A row of `model` that the statement around a rule reads itself, its id there being `id_column` ("u.id")."""

    model: type[models.Model]
    id_column: str


class ChatModel(models.Model):
    """One entry of the model catalog: what is sent upstream and what it costs."""

    class TokenLimitParam(models.TextChoices):
        MAX_TOKENS = "max_tokens", "max_tokens"
        MAX_COMPLETION_TOKENS = "max_completion_tokens", "max_completion_tokens (reasoning models)"

    model_id = models.CharField("model id", max_length=100, unique=True, help_text="The name sent upstream.")
    display_name = models.CharField(max_length=100)
    input_price = models.DecimalField(
        "input price", max_digits=12, decimal_places=6, default=Decimal(0), help_text="USD per 1M prompt tokens."
    )
    output_price = models.DecimalField(
        "output price", max_digits=12, decimal_places=6, default=Decimal(0), help_text="USD per 1M completion tokens."
    )
    cached_input_price = models.DecimalField(
        "cached input price",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="USD per 1M cached prompt tokens; empty means the input price.",
    )
    context_window = models.PositiveIntegerField(help_text="Tokens the model reads at most, prompt and reply.")
    max_output_tokens = models.PositiveIntegerField(help_text="Sent as the token limit on every call.")
    token_limit_param = models.CharField(
        "token limit parameter",
        max_length=30,
        choices=TokenLimitParam.choices,
        default=TokenLimitParam.MAX_TOKENS,
        help_text="The name the upstream takes the token limit under: reasoning models want max_completion_tokens.",
    )
    accepts_images = models.BooleanField(
        "accepts images", default=False, help_text="Image parts in prompts are sent to it; otherwise refused."
    )
    image_base_tokens = models.PositiveIntegerField(
        default=85, help_text="Prompt tokens of an image at low detail, and the base of a high-detail one."
    )
    image_tile_tokens = models.PositiveIntegerField(
        default=170, help_text="Prompt tokens per 512-pixel tile of a high-detail image."
    )
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField("default", default=False)
    realtime = models.BooleanField(
        default=False, help_text="A Realtime (voice) model: offered for client secrets, not in the chat."
    )
    embedding = models.BooleanField(
        default=False,
        help_text="An embedding model: offered at /v1/embeddings, billed for input tokens only, not in the chat.",
    )

    objects = ChatModelQuerySet.as_manager()

    class Meta:
        ordering = ["display_name"]
        verbose_name = "model"
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_model"),
        ]

    def __str__(self):
        return self.display_name

    def prices(self) -> Prices:
        """The prices in force now: a call keeps these to the end, whatever an admin changes meanwhile."""
        return Prices(
            input=self.input_price,
            output=self.output_price,
            cached_input=self.input_price if self.cached_input_price is None else self.cached_input_price,
        )

    def token_limit(self, max_tokens: int) -> dict:
        """The token limit as this model's upstream takes it: {"max_tokens": n} or {"max_completion_tokens": n}."""
        return {self.token_limit_param: max_tokens}

    def image_token_rule(self) -> ImageTokenRule:
        return ImageTokenRule(base_tokens=self.image_base_tokens, tile_tokens=self.image_tile_tokens)

    def cost(self, *, prompt_tokens: int, completion_tokens: int = 0, cached_tokens: int = 0) -> Decimal:
        return self.prices().cost(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_tokens=cached_tokens
        )


def usable_model(model_id: str, *, user, key=None, realtime: bool = False, embedding: bool = False) -> ChatModel | None:
    """The enabled model of this id and kind (chat, realtime or embedding) if `user` may use it, narrowed to
    the API `key`'s list when there is one; a chat model only if the upstream serves it. None otherwise.

    The rule of ChatModel.objects.usable_by and of GET /v1/models, written out:
    every message and /v1 call looks its model up, and the ORM took longer to
    build that query than the rest of a /v1 call's database work.
    """
    if not realtime and not embedding and not chat_model_served(model_id):
        return None
    rule, params = usable_rule("m", user=user, key=key, realtime=realtime, embedding=embedding)
    statement = f"SELECT {columns(ChatModel, 'm')} FROM {ChatModel._meta.db_table} m WHERE m.model_id = %s AND {rule}"
    row = first_row(statement, [model_id, *params])
    return None if row is None else instance_from(ChatModel, row)


def chat_model_served(model_id: str) -> bool:
    """Whether the upstream serves this chat model: it lists it, or lists nothing we could read."""
    served = served_model_ids()
    return served is None or model_id in served


def usable_rule(alias: str, *, user, key=None, realtime: bool = False, embedding: bool = False) -> tuple[str, list]:
    """usable_model's rule on the catalog row `alias` of a statement, as SQL and its parameters: enabled, of
    this kind, and on the user's (and the key's) list of allowed models when there is one. The upstream's
    list is not in it (chat_model_served).

    `user` and `key`: instances, or ReadAlongside when the statement reads their rows itself.
    """
    pk = connection.ops.quote_name(ChatModel._meta.pk.column)
    rule, params = (
        f"{alias}.enabled = %s AND {alias}.realtime = %s AND {alias}.embedding = %s",
        [True, realtime, embedding],
    )
    for owner in (user, key):
        if isinstance(owner, ReadAlongside):
            listed = model_list_query(owner.model, owner.id_column)
        elif owner is not None:
            listed = model_list_query(owner._meta.model)
            params += [owner.pk, owner.pk]
        else:
            continue
        rule += f" AND ({alias}.{pk} IN ({listed}) OR NOT EXISTS ({listed}))"
    return rule, params


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user):
        return self.filter(user=user)


class Conversation(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    system_prompt = models.TextField(blank=True)
    model = models.ForeignKey(ChatModel, on_delete=models.PROTECT, related_name="conversations")
    # Turns too old for the model's context window, summarised; sent in their place.
    summary = models.TextField(blank=True)
    summary_upto = models.BigIntegerField(null=True, blank=True, help_text="The last message the summary covers.")
    # The last message of the branch on screen: a new message follows it, and a reload shows its branch.
    leaf = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, editable=False, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now, help_text="Last activity; chats are listed by it.")

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [models.Index(fields=["user", "-updated_at"], name="conversation_user_recent")]

    def __str__(self):
        return self.title or f"Chat {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("conversations:detail", args=[self.pk])


TITLE_LENGTH = 60


def title_from_text(text: str) -> str:
    first_line = " ".join(text.split())
    if len(first_line) <= TITLE_LENGTH:
        return first_line
    return first_line[: TITLE_LENGTH - 1].rstrip() + "…"


# Text search configuration: "simple" stems no language, so every language is found alike.
SEARCH_CONFIG = "simple"


class MessageQuerySet(models.QuerySet):
    def stale_streaming(self):
        """Replies whose generator stopped touching them: its process died."""
        cutoff = timezone.now() - timedelta(seconds=settings.STREAM_STALE_AFTER)
        return self.filter(status__in=Message.LIVE_STATUSES, updated_at__lt=cutoff)


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    LIVE_STATUSES = (Status.PENDING, Status.STREAMING)

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # The message this one follows in its branch (None for the first). Versions of a message (edits,
    # regenerated replies) are its siblings: same parent, same role.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, editable=False, related_name="children"
    )
    # Denormalised from the conversation so spending per user needs no join.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    model = models.ForeignKey(ChatModel, on_delete=models.PROTECT, null=True, blank=True, related_name="messages")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0), help_text="USD.")
    usage_estimated = models.BooleanField(
        default=False, help_text="The upstream sent no usage, so tokens were counted from the text."
    )
    reported_model = models.CharField(
        max_length=100, blank=True, help_text="The model the upstream said answered (its replies' `model` field)."
    )
    time_to_first_token = models.DurationField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)
    finish_reason = models.CharField(max_length=30, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_text = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Touched by every flush of a streaming reply: a heartbeat.
    updated_at = models.DateTimeField(default=timezone.now)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="message_conversation_order"),
            models.Index(fields=["user", "created_at"], name="message_user_created"),
            models.Index(fields=["updated_at"], name="message_live", condition=Q(status__in=["pending", "streaming"])),
            # Chat search on PostgreSQL (services/search.py); the migration skips it on SQLite.
            GinIndex(SearchVector("content", config=SEARCH_CONFIG), name="message_search"),
        ]

    def __str__(self):
        return f"{self.role} message {self.pk}"

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES

    @cached_property
    def shown_images(self) -> list["MessageImage"]:
        """Its images, to show with it. Set by the send that has just stored them, so the turn it answers
        with shows them without a query to read them back (about 1 ms of ORM work, for none in most turns)."""
        return list(self.images.all())


IMAGE_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp"}


def message_image_path(image: "MessageImage", filename: str) -> str:
    """Where an attached image's file goes under MEDIA_ROOT: per user, under a random name (never the user's)."""
    return f"chat-images/{image.message.user_id}/{secrets.token_urlsafe(16)}{IMAGE_EXTENSIONS[image.content_type]}"


class MessageImage(models.Model):
    """An image attached to a user's message: sent to the model with it, shown only to its owner."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="images")
    # An edited message keeps its images: the new version's rows share the files (see services/images.py).
    file = models.FileField(upload_to=message_image_path, max_length=200)
    name = models.CharField(max_length=200, help_text="The file's name on the user's computer, as they sent it.")
    content_type = models.CharField(max_length=20, choices=[(kind, kind) for kind in IMAGE_EXTENSIONS])
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    bytes = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return self.name
