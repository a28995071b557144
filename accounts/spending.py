"""The spending console in the admin: spend and tokens per day, user and model over a date range, and a CSV of it.

Every figure adds up DailyUsage rows. budget_settle keeps each row equal to
the sum of its UsageRecord rows, in the same transaction, so a year of a busy
site is a few hundred thousand rollup rows to add instead of millions of
ledger rows, and the totals still equal the ledger's.
"""

import csv
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from accounts.models import DailyUsage, User, local_today
from conversations.models import ChatModel

DEFAULT_DAYS = 30
# A leap year at most: the chart and the table per day stay readable, the page fast.
MAX_DAYS = 366
TOP_SPENDERS = 10
# Users listed by name on the page; the CSV and the user filter reach the rest.
PER_USER_ROWS = 1000
TEMPLATE = "admin/spending/spending.html"

FIGURES = {"calls": Sum("calls"), "tokens": Sum("tokens"), "cost": Sum("cost")}


class SpendingForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    end = forms.DateField(help_text="Inclusive.", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    user = forms.CharField(required=False, max_length=150, help_text="A username; empty for everyone.")
    model = forms.ModelChoiceField(
        queryset=ChatModel.objects.order_by("display_name"),
        to_field_name="model_id",
        required=False,
        empty_label="All models",
    )

    def clean_user(self) -> User | None:
        username = self.cleaned_data["user"].strip()
        if not username:
            return None
        user = User.objects.filter(username=username).first()
        if user is None:
            raise ValidationError(f"There is no user called “{username}”.")
        return user

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if end < start:
                raise ValidationError("The end date is before the start date.")
            if days_between(start, end) > MAX_DAYS:
                raise ValidationError(
                    f"That range has {days_between(start, end):,} days; choose at most {MAX_DAYS}. "
                    "For a longer period, export it a year at a time as CSV."
                )
        return cleaned


def days_between(start: date, end: date) -> int:
    """Days from start to end, both included."""
    return (end - start).days + 1


def spending_form(query: QueryDict, *, today: date) -> SpendingForm:
    """The form bound to the query string; an empty start or end means the last DEFAULT_DAYS days up to today."""
    data = query.copy()
    defaults = {"start": today - timedelta(days=DEFAULT_DAYS - 1), "end": today}
    for name, default in defaults.items():
        if not data.get(name, "").strip():
            data[name] = default.isoformat()
    return SpendingForm(data)


def spending_rows(
    *, start: date, end: date, user: User | None = None, model: ChatModel | None = None
) -> QuerySet[DailyUsage]:
    rows = DailyUsage.objects.filter(day__gte=start, day__lte=end)
    if user is not None:
        rows = rows.filter(user=user)
    if model is not None:
        rows = rows.filter(model=model)
    return rows.order_by()


def usd(amount: Decimal) -> str:
    return f"${amount:,.6f}"


def shown(row: dict) -> dict:
    """The row with its figures as the page shows them.

    Done here rather than with template filters: a year of days and a thousand
    users are thousands of numbers, and floatformat costs ten times as much.
    """
    return row | {
        "calls_shown": f"{row['calls']:,}",
        "tokens_shown": f"{row['tokens']:,}",
        "cost_shown": usd(row["cost"]),
    }


@dataclass(frozen=True)
class Spending:
    totals: dict
    days: list[dict]
    users: list[dict]
    models: list[dict]
    top_spenders: list[dict]

    @property
    def users_listed(self) -> list[dict]:
        return self.users[:PER_USER_ROWS]


def spending_summary(rows: QuerySet[DailyUsage], *, start: date, end: date) -> Spending:
    """Calls, tokens and dollars per day (every day of the range, idle ones at zero), per user, per model, in all."""
    by_day = {row["day"]: row for row in rows.values("day").annotate(**FIGURES)}
    days = []
    for offset in range(days_between(start, end)):
        day = start + timedelta(days=offset)
        row = by_day.get(day) or {"day": day, "calls": 0, "tokens": 0, "cost": Decimal(0)}
        days.append(shown(row) | {"day_shown": f"{day:%a} {day.day} {day:%b %Y}"})
    users = [
        shown(row)
        for row in rows.values("user_id", username=F("user__username")).annotate(**FIGURES).order_by("username")
    ]
    models = [
        shown(row)
        for row in rows.values("model_id", model_ref=F("model__model_id"), model_name=F("model__display_name"))
        .annotate(**FIGURES)
        .order_by("-cost", "model_name")
    ]
    # Each rollup row has one model, so the models' sums add up to the totals: no fourth pass over the rows.
    totals = shown(
        {
            "calls": sum(row["calls"] for row in models),
            "tokens": sum(row["tokens"] for row in models),
            "cost": sum((row["cost"] for row in models), Decimal(0)),
        }
    )
    spenders = sorted(users, key=lambda row: (-row["cost"], row["username"]))[:TOP_SPENDERS]
    top_spenders = [row | {"share": row["cost"] * 100 / totals["cost"] if totals["cost"] else 0} for row in spenders]
    return Spending(totals=totals, days=days, users=users, models=models, top_spenders=top_spenders)


# The chart's drawing area, in SVG user units; the SVG scales to the page's width.
CHART_WIDTH, CHART_HEIGHT = 800, 220
PLOT_LEFT, PLOT_TOP, PLOT_BOTTOM = 76, 8, 192


def spending_chart(days: list[dict]) -> dict:
    """Bars of dollars per day, with the numbers an SVG needs (as strings, free of number localisation)."""
    peak = max(days, key=lambda row: row["cost"])
    plot_height = PLOT_BOTTOM - PLOT_TOP
    slot = (CHART_WIDTH - PLOT_LEFT) / len(days)
    gap = slot * 0.2 if slot >= 4 else 0
    bars = []
    for index, row in enumerate(days):
        height = float(row["cost"] / peak["cost"]) * plot_height if peak["cost"] else 0
        if row["cost"]:
            height = max(height, 1)  # a day with any spending shows
        x = PLOT_LEFT + index * slot
        bars.append(
            row
            | {
                "slot_x": f"{x:.2f}",
                "slot_width": f"{slot:.2f}",
                "x": f"{x + gap / 2:.2f}",
                "width": f"{slot - gap:.2f}",
                "y": f"{PLOT_BOTTOM - height:.2f}",
                "height": f"{height:.2f}",
            }
        )
    ticks = [
        {"y": f"{PLOT_BOTTOM - share * plot_height:.2f}", "cost_shown": usd(peak["cost"] * Decimal(share))}
        for share in (0, 0.5, 1)
    ]
    # The first, middle and last days, kept inside the drawing at either end.
    labels = [
        {"x": f"{PLOT_LEFT + (index + 0.5) * slot:.2f}", "anchor": "middle", "day": days[index]["day"]}
        for index in sorted({0, len(days) // 2, len(days) - 1})
    ]
    if len(labels) > 1:
        labels[0] |= {"x": str(PLOT_LEFT), "anchor": "start"}
        labels[-1] |= {"x": str(CHART_WIDTH), "anchor": "end"}
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": PLOT_LEFT,
        "top": PLOT_TOP,
        "plot_height": plot_height,
        "label_y": PLOT_BOTTOM + 18,
        "peak": peak,
        "bars": bars,
        "ticks": ticks,
        "labels": labels,
    }


# Spreadsheets run a cell that starts with one of these as a formula; usernames may start with + - @.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def spending_csv(rows: QuerySet[DailyUsage], *, start: date, end: date) -> HttpResponse:
    """One line per day, user and model: the rows every figure of the page adds up, dollars to the 8th place."""
    response = HttpResponse(
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="spending-{start}-to-{end}.csv"'},
    )
    writer = csv.writer(response)
    writer.writerow(["day", "user", "model", "calls", "tokens", "cost_usd"])
    lines = rows.order_by("day", "user__username", "model__model_id").values_list(
        "day", "user__username", "model__model_id", "calls", "tokens", "cost"
    )
    for day, username, model_id, calls, tokens, cost in lines.iterator(chunk_size=5000):
        writer.writerow(
            [day.isoformat(), spreadsheet_text(username), spreadsheet_text(model_id), calls, tokens, f"{cost:f}"]
        )
    return response


@require_GET
def spending_view(request: HttpRequest) -> HttpResponse:
    """Served through admin.site.admin_view: staff only, and only those who may view the daily usage."""
    if not request.user.has_perm("accounts.view_dailyusage"):
        raise PermissionDenied
    form = spending_form(request.GET, today=local_today())
    context = {**admin.site.each_context(request), "title": "Spending", "form": form}
    if not form.is_valid():
        return render(request, TEMPLATE, context, status=400)
    start, end = form.cleaned_data["start"], form.cleaned_data["end"]
    rows = spending_rows(start=start, end=end, user=form.cleaned_data["user"], model=form.cleaned_data["model"])
    if request.GET.get("format") == "csv":
        return spending_csv(rows, start=start, end=end)
    spending = spending_summary(rows, start=start, end=end)
    # Links that narrow the page to one user or one model, keeping the other filters; built once, not per row.
    dates = {"start": start.isoformat(), "end": end.isoformat()}
    user = {"user": form.cleaned_data["user"].username} if form.cleaned_data["user"] else {}
    model = {"model": form.cleaned_data["model"].model_id} if form.cleaned_data["model"] else {}
    context |= {
        "start": start,
        "end": end,
        "spending": spending,
        "chart": spending_chart(spending.days),
        "per_user_rows": PER_USER_ROWS,
        "query_for_a_user": urlencode(dates | model),
        "query_for_a_model": urlencode(dates | user),
        "csv_query": urlencode(dates | user | model | {"format": "csv"}),
        # The admin's own URL pattern, <id>/change/, without a reverse() per row.
        "user_admin_url": reverse("admin:accounts_user_changelist"),
    }
    return render(request, TEMPLATE, context)
