from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction
from django.template.response import TemplateResponse

from accounts.forms import ApiKeyAdminAddForm
from accounts.models import ApiKey, AuditEntry, DailyUsage, UsageRecord, User
from accounts.services import api_key_create, api_key_revoke, audit_record, limits_set


class NearLimitFilter(admin.SimpleListFilter):
    title = "quota"
    parameter_name = "quota"

    def lookups(self, request, model_admin):
        return [("over80", "over 80% of a limit")]

    def queryset(self, request, queryset):
        if self.value() == "over80":
            return queryset.near_a_limit()
        return queryset


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    fieldsets = [
        *BaseUserAdmin.fieldsets,
        (
            "Limits",
            {
                "fields": [*User.LIMIT_FIELDS, "allowed_models"],
                "description": "Empty fields take the site's defaults (QUOTA_* settings). Every change is audited.",
            },
        ),
    ]
    filter_horizontal = ["groups", "user_permissions", "allowed_models"]
    list_display = ["username", "email", "is_staff", "tokens_today_of_limit", "usd_this_month_of_limit", "last_login"]
    list_filter = [NearLimitFilter, "is_staff", "is_superuser", "is_active"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_usage()

    @admin.display(description="tokens today", ordering="tokens_today")
    def tokens_today_of_limit(self, user):
        limit = f"{user.tokens_limit:,}" if user.tokens_limit is not None else "no limit"
        return f"{user.tokens_today:,} / {limit}"

    @admin.display(description="spent this month", ordering="usd_this_month")
    def usd_this_month_of_limit(self, user):
        limit = f"${user.usd_limit:,.2f}" if user.usd_limit is not None else "no limit"
        return f"${user.usd_this_month:,.4f} / {limit}"

    def save_model(self, request, obj, form, change):
        if not change:
            return super().save_model(request, obj, form, change)
        changed_limits = {field: form.cleaned_data[field] for field in User.LIMIT_FIELDS if field in form.changed_data}
        with transaction.atomic():
            # Limits go through limits_set, which audits each change; the rest saves as usual.
            for field in changed_limits:
                setattr(obj, field, User.objects.values_list(field, flat=True).get(pk=obj.pk))
            super().save_model(request, obj, form, change)
            limits_set(user=obj, actor=request.user, actor_label=request.user.get_username(), **changed_limits)
            obj.refresh_from_db(fields=User.LIMIT_FIELDS)

    def save_related(self, request, form, formsets, change):
        before = sorted(form.instance.allowed_models.values_list("model_id", flat=True)) if change else []
        super().save_related(request, form, formsets, change)
        after = sorted(form.instance.allowed_models.values_list("model_id", flat=True))
        if change and before != after:
            audit_record(
                actor=request.user,
                actor_label=request.user.get_username(),
                action=AuditEntry.Action.LIMIT_CHANGED,
                user=form.instance,
                subject="allowed_models",
                old=", ".join(before) or "all enabled",
                new=", ".join(after) or "all enabled",
            )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what happened (ledger, audit, messages): shown, never added, edited or deleted here."""

    show_full_result_count = False  # a count over millions of rows on every page load is not worth it

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "action", "user", "subject", "old_value", "new_value"]
    list_filter = ["action", "created_at"]
    list_select_related = ["user"]
    search_fields = ["actor_label", "user__username", "subject"]
    date_hierarchy = "created_at"


# --- The usage ledger and its daily rollup, read-only; the spending console's link on the index -------------
# (Kept apart from the user admin above; the console itself is accounts/spending.py at /admin/spending/.)


# Extends admin/index.html, so an override of that template still applies.
admin.site.index_template = "admin/spending/index.html"


class LedgerAdmin(ReadOnlyAdmin):
    """Rows written only by budget_settle."""

    list_select_related = ["user", "model"]
    search_fields = ["=user__username"]


@admin.register(UsageRecord)
class UsageRecordAdmin(LedgerAdmin):
    list_display = [
        "created_at", "day", "user", "kind", "model", "prompt_tokens", "completion_tokens", "cached_tokens",
        "cost", "estimated",
    ]  # fmt: skip
    list_filter = ["kind", "model", "estimated", "day"]
    # Newest first by primary key, which has an index; created_at has none and would sort the whole ledger.
    ordering = ["-id"]


@admin.register(DailyUsage)
class DailyUsageAdmin(LedgerAdmin):
    list_display = ["day", "user", "model", "calls", "tokens", "cost"]
    list_filter = ["day", "model"]
    ordering = ["-day", "-id"]


# --- API keys: staff make them for anyone and revoke them; the key itself is shown once, never stored ---------


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name", "user", "key_start", "created_at", "expires_at", "last_used_at", "last_used_ip", "status",
    ]  # fmt: skip
    list_filter = [ApiKeyStatusFilter, "created_at", "expires_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    date_hierarchy = "created_at"
    actions = ["revoke"]
    # key_hash is in no list: it is never shown, nor editable.
    fields = [
        "user", "name", "prefix", "created_at", "expires_at", "allowed_models", "last_used_at", "last_used_ip",
        "revoked_at",
    ]  # fmt: skip
    readonly_fields = ["user", "prefix", "created_at", "last_used_at", "last_used_ip", "revoked_at"]
    add_fields = ["user", "name", "expires_at", "allowed_models"]
    filter_horizontal = ["allowed_models"]
    autocomplete_fields = ["user"]

    @admin.display(description="key", ordering="prefix")
    def key_start(self, key):
        return f"{key.prefix}…"

    def get_queryset(self, request):
        return super().get_queryset(request).with_status()

    @admin.display(description="status", ordering="status")
    def status(self, key):
        return key.status

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            api_key_revoke(key=key)
            self.log_change(request, key, "Revoked.")
        self.message_user(request, f"Revoked {len(keys)} key{'s' if len(keys) != 1 else ''}.", messages.SUCCESS)

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyAdminAddForm
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        # Made by the service like every key, so the form's instance only mirrors the new row.
        key, secret = api_key_create(
            user=form.cleaned_data["user"],
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data["expires_at"],
            allowed_models=form.cleaned_data["allowed_models"],
        )
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding, obj._state.db = False, key._state.db
        obj.secret_shown_once = secret

    def save_related(self, request, form, formsets, change):
        if change:  # on add, api_key_create has set the models
            super().save_related(request, form, formsets, change)

    def response_add(self, request, obj, post_url_continue=None):
        # The key goes out in this answer only: not in a redirect, a message (a cookie) or the session.
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key created",
            "key": obj,
            "secret": obj.secret_shown_once,
        }
        return TemplateResponse(request, "admin/accounts/apikey/created.html", context)
