from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction

from accounts.models import AuditEntry, User
from accounts.services import audit_record, limits_set


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


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "user", "subject", "old_value", "new_value"]
    list_filter = ["action", "created_at"]
    list_select_related = ["user"]
    search_fields = ["actor_label", "user__username", "subject"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- The usage ledger and its daily rollup, read-only; the spending console's link on the index -------------
# (Kept apart from the user admin above; the console itself is accounts/spending.py at /admin/spending/.)

from accounts.models import DailyUsage, UsageRecord  # noqa: E402

# Extends admin/index.html, so an override of that template still applies.
admin.site.index_template = "admin/spending/index.html"


class LedgerAdmin(admin.ModelAdmin):
    """Rows written only by budget_settle: shown, never added, edited or deleted here."""

    list_select_related = ["user", "model"]
    search_fields = ["=user__username"]
    show_full_result_count = False  # a count over millions of rows on every page load is not worth it

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
