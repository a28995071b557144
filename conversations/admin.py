from django.contrib import admin
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.text import Truncator

from accounts.admin import ReadOnlyAdmin
from conversations.models import ChatModel, Conversation, Message
from conversations.services.chats import conversation_reset


@admin.register(ChatModel)
class ChatModelAdmin(admin.ModelAdmin):
    list_display = [
        "display_name", "model_id", "input_price", "output_price", "cached_input_price",
        "context_window", "max_output_tokens", "accepts_images", "enabled", "is_default",
    ]  # fmt: skip
    list_editable = ["enabled"]
    search_fields = ["model_id", "display_name"]


class MessageInline(admin.TabularInline):
    """Messages are the ledger of what was spent: shown, never edited here."""

    model = Message
    fields = ["created_at", "role", "status", "short_content", "prompt_tokens", "completion_tokens", "cost"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="content")
    def short_content(self, message):
        return message.content[:120]


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "model", "created_at", "updated_at"]
    list_select_related = ["user", "model"]
    list_filter = ["model", "created_at"]
    search_fields = ["title", "user__username"]
    raw_id_fields = ["user"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]
    actions = ["reset_conversations"]

    @admin.action(
        description="Reset selected conversations (remove their messages; spending records stay)",
        permissions=["change"],
    )
    def reset_conversations(self, request, queryset):
        removed = sum(conversation_reset(conversation=conversation, actor=request.user) for conversation in queryset)
        self.message_user(request, f"Reset {len(queryset)} conversations: {removed} messages removed.")


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    # Narrow enough for 1366 px beside the filters, tokens and cost included (see changelist_view, Media).
    list_display = [
        "id", "created", "user", "chat", "role", "status", "model",
        "prompt_tokens", "completion_tokens", "cached_tokens", "cost", "estimated",
    ]  # fmt: skip
    list_select_related = ["user", "conversation", "model"]
    list_filter = ["status", "role", "model", "usage_estimated", "created_at", "user"]
    search_fields = ["user__username"]
    # Newest first by primary key: an index PostgreSQL already has, so a page of a million rows
    # needs no sort (created_at ordering, or a date hierarchy, costs a second there).
    ordering = ["-id"]

    class Media:
        css = {"all": ["admin_lists.css"]}

    def changelist_view(self, request, extra_context=None):
        # The columns need the width the admin's app list would take beside them.
        return super().changelist_view(request, {**(extra_context or {}), "is_nav_sidebar_enabled": False})

    # Ordered by id, which follows time and has an index (see ordering above).
    @admin.display(description="created", ordering="id")
    def created(self, message):
        return date_format(timezone.localtime(message.created_at), "j M Y H:i")

    @admin.display(description="chat", ordering="conversation")
    def chat(self, message):
        return Truncator(str(message.conversation)).chars(28)

    @admin.display(description="est.", boolean=True, ordering="usage_estimated")
    def estimated(self, message):
        return message.usage_estimated
