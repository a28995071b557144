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
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.models import DailyUsage, User, local_today
from conversations.models import ChatModel

DEFAULT_DAYS = 30
# A leap year, no more: the per-day chart and table stay readable and the page fast.
MAX_DAYS = 366
TOP_SPENDERS = 10
TEMPLATE = "admin/spending/spending.html"

FIGURES = {"calls": Sum("calls"), "tokens": Sum("tokens"), "cost": Sum("cost")}


class SpendingForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    end = forms.DateField(help_text="Inclusive.", widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"))
    user = forms.CharField(required=False, max_length=150, help_text="A username; empty: everyone.")
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
            if (end - start).days + 1 > MAX_DAYS:
                raise ValidationError(
                    f"That range is {(end - start).days + 1:,} days; choose at most {MAX_DAYS}. "
                    "For longer periods, export each year as CSV."
                )
        return cleaned


def spending_form(query: QueryDict, *, today: date) -> SpendingForm:
    """The form bound to the query, an empty start or end meaning the last DEFAULT_DAYS days up to today."""
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


@dataclass(frozen=True)
class Figures:
    calls: int
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class Spending:
    totals: Figures
    days: list[dict]
    users: list[dict]
    models: list[dict]

    @property
    def top_spenders(self) -> list[dict]:
        spenders = sorted(self.users, key=lambda row: (-row["cost"], row["username"]))[:TOP_SPENDERS]
        return [row | {"share": row["cost"] / self.totals.cost * 100 if self.totals.cost else 0} for row in spenders]


def spending_summary(rows: QuerySet[DailyUsage], *, start: date, end: date) -> Spending:
    """The figures per day (every day of the range, idle ones at zero), per user and per model, and in total."""
    by_day = {row["day"]: row for row in rows.values("day").annotate(**FIGURES)}
    zero = {"calls": 0, "tokens": 0, "cost": Decimal(0)}
    days = [by_day.get(start + timedelta(days=n), zero | {"day": start + timedelta(days=n)}) for n in range(_span(start, end))]
    users = list(
        rows.values("user_id", username=_field("user__username")).annotate(**FIGURES).order_by("username")
    )
    models = list(
        rows.values("model_id", model_name=_field("model__display_name"), model_ref=_field("model__model_id"))
        .annotate(**FIGURES)
        .order_by("-cost", "model_name")
    )
    # Every row belongs to exactly one model, so the models' sums are the totals.
    totals = Figures(
        calls=sum(row["calls"] for row in models),
        tokens=sum(row["tokens"] for row in models),
        cost=sum((row["cost"] for row in models), Decimal(0)),
    )
    return Spending(totals=totals, days=days, users=users, models=models)


def _span(start: date, end: date) -> int:
    return (end - start).days + 1


def _field(name: str):
    from django.db.models import F

    return F(name)
