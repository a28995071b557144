"""Quota periods follow the site's TIME_ZONE: the day and the month end at local midnight, DST included.

The clock is frozen (time_machine, tick=False) a second before and exactly at
each boundary; budgets are exercised through budget_reserve, budget_settle and
usage_summary, and once through the real chat view.
"""

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.db.models import Sum
from django.utils import timezone

from accounts.billing.budget import QuotaExceeded, budget_reserve, budget_settle, usage_summary
from accounts.models import DailyUsage, UsageRecord, User
from conversations.models import ChatModel, Message
from tests.conftest import HTMX, watch_reply
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db

PARIS = "Europe/Paris"


def local(zone: str, day: date, clock: time = time.min) -> datetime:
    return datetime.combine(day, clock, tzinfo=ZoneInfo(zone))


def frozen_at(moment: datetime):
    """Stop the clock at `moment`. Given in UTC, so time_machine leaves the process's zone to Django's setting."""
    return time_machine.travel(moment.astimezone(UTC), tick=False)


def last_second_of(zone: str, day: date) -> datetime:
    return local(zone, day, time(23, 59, 59))


@pytest.fixture
def big(catalog) -> ChatModel:
    """GPT-4o: $10 per million output tokens, so 100,000 of them cost exactly $1."""
    return ChatModel.objects.get(model_id="gpt-4o")


def spend(user: User, model: ChatModel, *, prompt_tokens: int = 0, completion_tokens: int = 0):
    """A call settled now, as reply_finish settles one."""
    return budget_settle(
        reservation_id=None,
        user_id=user.pk,
        model=model,
        kind=UsageRecord.Kind.REPLY,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


def reserve(user: User, model: ChatModel, *, prompt_tokens: int = 100, max_tokens: int = 500):
    return budget_reserve(user_id=user.pk, model=model, prompt_tokens=prompt_tokens, max_tokens=max_tokens)


def test_the_quota_clock_is_the_sites_time_zone(settings):
    settings.TIME_ZONE = PARIS

    assert timezone.get_current_timezone().key == PARIS


@pytest.mark.parametrize("zone", ["UTC", PARIS, "Asia/Kolkata", "America/Los_Angeles"])
def test_the_days_tokens_reset_exactly_at_local_midnight(settings, alice, mini, zone):
    settings.TIME_ZONE = zone
    User.objects.filter(pk=alice.pk).update(tokens_per_day=1000)
    day = date(2026, 6, 15)

    with frozen_at(last_second_of(zone, day)):
        spend(alice, mini, prompt_tokens=600, completion_tokens=400)
        before = usage_summary(user=alice)
        with pytest.raises(QuotaExceeded) as refused:
            reserve(alice, mini)

    assert before.tokens_today == 1000
    assert before.day_resets_at == local(zone, day + timedelta(days=1))
    assert refused.value.code == "tokens_per_day"
    assert refused.value.resets_at == local(zone, day + timedelta(days=1))
    assert refused.value.user_message == (
        f"You have used your 1,000 tokens for today. It resets at 00:00 on 16 June ({zone}), in 1 min."
    )

    with frozen_at(local(zone, day + timedelta(days=1))):
        after = usage_summary(user=alice)
        grant = reserve(alice, mini)

    assert after.tokens_today == 0
    assert after.day_resets_at == local(zone, day + timedelta(days=2))
    assert grant.max_tokens == 500
    # Same month: the day's reset leaves the month's dollars as they were.
    assert after.usd_this_month == before.usd_this_month == mini.cost(prompt_tokens=600, completion_tokens=400)


@pytest.mark.parametrize(
    "zone, last_day, first_of_next, shown",
    [
        (PARIS, date(2026, 4, 30), date(2026, 5, 1), "1 May"),
        ("America/New_York", date(2026, 12, 31), date(2027, 1, 1), "1 January"),
        ("UTC", date(2028, 2, 29), date(2028, 3, 1), "1 March"),
        ("Asia/Tokyo", date(2026, 2, 28), date(2026, 3, 1), "1 March"),
    ],
)
def test_the_months_dollars_reset_exactly_at_local_midnight_after_its_last_day(
    settings, alice, big, zone, last_day, first_of_next, shown
):
    settings.TIME_ZONE = zone
    User.objects.filter(pk=alice.pk).update(usd_per_month=Decimal("1.00"))

    with frozen_at(local(zone, last_day.replace(day=1))):
        spend(alice, big, completion_tokens=40_000)  # $0.40 on the first of the month
    with frozen_at(last_second_of(zone, last_day)):
        spend(alice, big, completion_tokens=60_000)  # $0.60 in its last second
        before = usage_summary(user=alice)
        with pytest.raises(QuotaExceeded) as refused:
            reserve(alice, big)

    assert before.usd_this_month == Decimal("1.00")
    assert before.month_resets_at == local(zone, first_of_next)
    assert refused.value.code == "usd_per_month"
    assert refused.value.resets_at == local(zone, first_of_next)
    assert refused.value.user_message == (
        f"You have used your $1.00 for this month. It resets at 00:00 on {shown} ({zone}), in 1 min."
    )

    with frozen_at(local(zone, first_of_next)):
        after = usage_summary(user=alice)
        grant = reserve(alice, big)

    assert (after.usd_this_month, after.tokens_today) == (Decimal(0), 0)
    assert grant.max_tokens == 500
    # The ledger keeps last month's spending on the days it happened.
    assert sorted(UsageRecord.objects.values_list("day", flat=True)) == [last_day.replace(day=1), last_day]


@pytest.mark.parametrize(
    "day, hours",
    [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)],
    ids=["spring-forward", "fall-back"],
)
def test_across_a_dst_change_the_day_still_ends_at_local_midnight(settings, alice, mini, day, hours):
    settings.TIME_ZONE = PARIS
    User.objects.filter(pk=alice.pk).update(tokens_per_day=1000)
    start, end = local(PARIS, day), local(PARIS, day + timedelta(days=1))
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=hours)  # it is a DST day

    with frozen_at(start):
        spend(alice, mini, prompt_tokens=1000)
        at_start = usage_summary(user=alice)
        with pytest.raises(QuotaExceeded) as refused:
            reserve(alice, mini)
    # 23:30 local: on the 25-hour day that is more than 24 hours after the day began.
    with frozen_at(local(PARIS, day, time(23, 30))):
        late = usage_summary(user=alice)
        late_annotated = User.objects.with_usage().get(pk=alice.pk)
    with frozen_at(end - timedelta(seconds=1)):
        last_second = usage_summary(user=alice)
    with frozen_at(end):
        next_day = usage_summary(user=alice)
        next_day_annotated = User.objects.with_usage().get(pk=alice.pk)
        grant = reserve(alice, mini)

    assert at_start.day_resets_at == end
    assert refused.value.user_message.endswith(
        f"It resets at 00:00 on {end.day} {end:%B} (Europe/Paris), in {hours} h 0 min."
    )
    assert late.tokens_today == late_annotated.tokens_today == last_second.tokens_today == 1000
    assert next_day.tokens_today == next_day_annotated.tokens_today == 0
    assert grant.max_tokens == 500


def test_a_call_in_flight_at_midnight_still_counts_against_the_new_days_limit(settings, alice, mini):
    """A call reserved at 23:59:59 and settled after midnight is booked in the new day, so it must hold room there.

    Otherwise calls started just after midnight take the whole new day and the
    late call's tokens are then booked on top of them: past the limit.
    """
    settings.TIME_ZONE = PARIS
    User.objects.filter(pk=alice.pk).update(tokens_per_day=1000)
    day = date(2026, 6, 15)

    with frozen_at(last_second_of(PARIS, day)):
        late = reserve(alice, mini, prompt_tokens=100, max_tokens=500)
    with frozen_at(local(PARIS, day + timedelta(days=1))):
        grants = [late]
        try:
            grants.append(reserve(alice, mini, prompt_tokens=100, max_tokens=500))
        except QuotaExceeded:
            pass
        # Every call granted uses all it was granted.
        for grant in grants:
            budget_settle(
                reservation_id=grant.reservation_id,
                user_id=alice.pk,
                model=mini,
                kind=UsageRecord.Kind.REPLY,
                prompt_tokens=100,
                completion_tokens=grant.max_tokens,
            )

    per_day = dict(DailyUsage.objects.values_list("day").annotate(tokens=Sum("tokens")))
    assert per_day and all(tokens <= 1000 for tokens in per_day.values()), per_day


@pytest.mark.django_db(transaction=True)
async def test_the_chat_says_when_the_day_resets_in_local_time_and_lets_the_user_in_after(
    settings, alice_async, alice, upstream
):
    settings.TIME_ZONE = PARIS
    await User.objects.filter(pk=alice.pk).aupdate(tokens_per_day=1000)
    mini = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    spring_forward = date(2026, 3, 29)  # a 23-hour day in Paris

    with frozen_at(local(PARIS, spring_forward, time(0, 0, 0))):
        await sync_to_async(spend)(alice, mini, prompt_tokens=1000)
        refused = await alice_async.post("/c/new/messages/", {"text": "Still there?"}, headers=HTMX)
    with frozen_at(local(PARIS, spring_forward + timedelta(days=1))):
        reply = await Message.objects.aget(role=Message.Role.ASSISTANT)
        upstream.script(Reply(text="Good morning."))
        await alice_async.post(f"/c/{reply.conversation_id}/messages/", {"text": "And now?"}, headers=HTMX)
        answer = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
        _, status = await watch_reply(alice_async, f"/c/{answer.conversation_id}/messages/{answer.pk}/stream/")

    assert refused.status_code == 200
    assert (
        "You have used your 1,000 tokens for today. "
        "It resets at 00:00 on 30 March (Europe/Paris), in 23 h 0 min." in refused.content.decode()
    )
    assert reply.error_code == "tokens_per_day"
    assert status == Message.Status.COMPLETE
    assert len(upstream.requests) == 1
    assert upstream.requests[0].json["messages"][-1] == {"role": "user", "content": "And now?"}
