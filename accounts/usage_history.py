"""A user's own usage over the last days, per day and per model, read from the daily rollup."""

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import Sum

from accounts.models import DailyUsage, User, local_today

HISTORY_DAYS = 30
# The chart's drawing box (an SVG viewBox): one bar per day, 8 wide (see usage.html), the tallest filling the height.
CHART_HEIGHT = 100
BAR_PITCH = 10


@dataclass(frozen=True)
class DayUsage:
    day: date
    calls: int
    tokens: int
    cost: Decimal
    # Where the day's bar is drawn in the chart's box.
    x: int
    bar_height: int

    @property
    def bar_top(self) -> int:
        return CHART_HEIGHT - self.bar_height


@dataclass(frozen=True)
class ModelUsage:
    name: str
    calls: int
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class UsageHistory:
    days: list[DayUsage]  # every day of the period, oldest first, days without use included
    models: list[ModelUsage]  # most tokens first
    first_day: date
    last_day: date
    chart_width: int = HISTORY_DAYS * BAR_PITCH
    chart_height: int = CHART_HEIGHT

    @property
    def tokens(self) -> int:
        return sum(day.tokens for day in self.days)

    @property
    def cost(self) -> Decimal:
        return sum((day.cost for day in self.days), Decimal(0))


def usage_history(*, user: User, days: int = HISTORY_DAYS) -> UsageHistory:
    """The user's calls, tokens and cost on each of the last `days` days (today included) and per model."""
    last_day = local_today()
    first_day = last_day - timedelta(days=days - 1)
    rows = DailyUsage.objects.filter(user=user, day__gte=first_day, day__lte=last_day)
    totals = ("calls", "tokens", "cost")
    per_day = {row["day"]: row for row in rows.values("day").annotate(*[Sum(name) for name in totals])}
    peak = max((row["tokens__sum"] for row in per_day.values()), default=0)
    day_list = []
    for index in range(days):
        day = first_day + timedelta(days=index)
        row = per_day.get(day, {})
        tokens = row.get("tokens__sum") or 0
        # A day with any use gets a visible bar, however small next to the peak.
        height = max(round(tokens * CHART_HEIGHT / peak), 1) if tokens else 0
        day_list.append(
            DayUsage(
                day=day,
                calls=row.get("calls__sum") or 0,
                tokens=tokens,
                cost=row.get("cost__sum") or Decimal(0),
                x=index * BAR_PITCH,
                bar_height=height,
            )
        )
    per_model = (
        rows.values("model__display_name")
        .annotate(*[Sum(name) for name in totals])
        .order_by("-tokens__sum", "model__display_name")
    )
    model_list = [
        ModelUsage(
            name=row["model__display_name"], calls=row["calls__sum"], tokens=row["tokens__sum"], cost=row["cost__sum"]
        )
        for row in per_model
    ]
    return UsageHistory(
        days=day_list, models=model_list, first_day=first_day, last_day=last_day, chart_width=days * BAR_PITCH
    )
