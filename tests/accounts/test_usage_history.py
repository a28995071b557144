"""The usage page's last 30 days per day and per model, costs shown only where the admin turns them on,
and refusals in the figures of the meter."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.billing.budget import QuotaExceeded, budget_reserve, budget_settle, usage_summary
from accounts.models import DailyUsage, Reservation, User
from conversations.models import ChatModel
from tests.conftest import make_conversation, make_message
from tests.dom import parse_html

pytestmark = pytest.mark.django_db

URL = "/accounts/usage/"
NOW = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)
TODAY = date(2026, 6, 15)


def settle_on(day: date, user: User, model_id: str, tokens: int) -> None:
    with time_machine.travel(datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12), tick=False):
        budget_settle(
            reservation_id=None,
            user_id=user.pk,
            model=ChatModel.objects.get(model_id=model_id),
            kind="reply",
            prompt_tokens=tokens,
            completion_tokens=0,
        )


def open_usage(client: Client):
    with time_machine.travel(NOW, tick=False):
        response = client.get(URL)
    assert response.status_code == 200
    return parse_html(response.content)


def rows(table) -> list[list[str]]:
    return [
        [cell.text for cell in row.find_all() if cell.tag in ("th", "td")] for row in table.find("tbody").find_all("tr")
    ]


def table_after(page, heading: str):
    """The table that follows the heading `heading`."""
    elements = list(page.iter())
    start = elements.index(page.find("h3", text=heading))
    return next(element for element in elements[start:] if element.tag == "table")


@pytest.fixture
def month(alice, bob, catalog):
    """Alice's use on four days of the last 30, one day just before them, and Bob's today."""
    settle_on(TODAY, alice, "gpt-4o-mini", 3_000)
    settle_on(TODAY, alice, "gpt-4o", 1_000)
    settle_on(TODAY - timedelta(days=1), alice, "gpt-4o-mini", 6_000)
    settle_on(TODAY - timedelta(days=29), alice, "gpt-4o", 500)
    settle_on(TODAY - timedelta(days=30), alice, "gpt-4o", 99_999)  # 31 days ago: outside the period
    settle_on(TODAY, bob, "gpt-4o", 77_777)


def test_it_shows_the_last_30_days_per_day_and_per_model(alice_client, month):
    page = open_usage(alice_client)

    assert page.find("h2", text="Last 30 days")
    assert rows(table_after(page, "Per model")) == [["GPT-4o mini", "2", "9000"], ["GPT-4o", "2", "1500"]]
    assert rows(table_after(page, "Per day")) == [
        ["Mon 15 Jun", "2", "4000"],
        ["Sun 14 Jun", "1", "6000"],
        ["Sun 17 May", "1", "500"],
    ]
    assert "99999" not in page.find("main").text and "77777" not in page.find("main").text


def test_its_chart_has_one_bar_per_day_of_use_the_busiest_day_the_tallest(alice_client, month):
    page = open_usage(alice_client)

    chart = page.find("svg", role="img")
    bars = {bar.find("title").text: int(bar.attrs["height"]) for bar in chart.find_all("rect")}
    assert bars == {"17 May: 500 tokens": 8, "14 June: 6000 tokens": 100, "15 June: 4000 tokens": 67}
    # Left to right, oldest first: 17 May is the first of the 30 days, today the last.
    xs = sorted((int(bar.attrs["x"]), bar.find("title").text) for bar in chart.find_all("rect"))
    assert [title for _, title in xs] == ["17 May: 500 tokens", "14 June: 6000 tokens", "15 June: 4000 tokens"]
    assert xs[0][0] == 0 and xs[-1][0] == 290
    assert chart.attrs["viewbox"] == "0 0 300 100"


def test_a_user_with_no_use_sees_an_empty_history(alice_client, catalog):
    page = open_usage(alice_client)

    assert page.find("svg", role="img").find_all("rect") == []
    assert page.find("p", text="Nothing used in these days.")


def test_costs_are_hidden_unless_the_admin_turns_them_on(alice, alice_client, month, settings):
    chat = make_conversation(alice)
    reply = make_message(
        chat, "assistant", "Hi", model=chat.model, prompt_tokens=12, completion_tokens=3, cost=Decimal("0.0000036")
    )

    hidden_usage, hidden_chat = open_usage(alice_client), parse_html(alice_client.get(f"/c/{chat.pk}/").content)
    settings.SHOW_COSTS = True
    shown_usage, shown_chat = open_usage(alice_client), parse_html(alice_client.get(f"/c/{chat.pk}/").content)

    def footer(page):
        return page.find(id=f"message-{reply.pk}").find(class_="usage").text

    assert footer(hidden_chat) == "GPT-4o mini · 12 in / 3 out"
    assert footer(shown_chat) == "GPT-4o mini · 12 in / 3 out · $0.000004"
    assert "$" not in hidden_usage.find("main").text and "$" not in hidden_chat.find(id="usage-link").text
    assert rows(table_after(shown_usage, "Per model"))[0][-1].startswith("$")
    assert "Spent this month" in shown_chat.find(id="usage-link").text


def test_a_dollar_limit_shows_its_meter_even_with_costs_hidden(alice, alice_client, month):
    User.objects.filter(pk=alice.pk).update(usd_per_month=Decimal("5.00"))

    page = open_usage(alice_client)

    assert page.labelled("Spent this month").tag == "meter"


# -- refusals in the meter's figures ------------------------------------------------------------------------------

LEFT = re.compile(
    r"^([\d,]+) of your ([\d,]+) tokens for today are left"
    r"(?:, ([\d,]+) of them held for replies still being written)?; "
)


def number(text: str) -> int:
    return int(text.replace(",", ""))


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(min_value=100, max_value=100_000),
    used_share=st.floats(min_value=0, max_value=1),
    held_share=st.floats(min_value=0, max_value=1),
    prompt_tokens=st.integers(min_value=1, max_value=5_000),
    max_tokens=st.integers(min_value=1, max_value=4_096),
)
def test_a_token_refusal_says_what_the_meter_shows_left_and_what_the_message_needs(
    alice, mini, limit, used_share, held_share, prompt_tokens, max_tokens
):
    DailyUsage.objects.all().delete()
    Reservation.objects.all().delete()
    User.objects.filter(pk=alice.pk).update(tokens_per_day=limit)
    used = int(limit * used_share)
    if used:
        budget_settle(
            reservation_id=None, user_id=alice.pk, model=mini, kind="reply", prompt_tokens=used, completion_tokens=0
        )
    held = int((limit - used) * held_share)
    if held:
        budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=held, max_tokens=0)

    try:
        budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=prompt_tokens, max_tokens=max_tokens)
    except QuotaExceeded as refused:
        message = refused.user_message
    else:
        return  # it fitted: nothing to explain
    Reservation.objects.all().delete()

    alice.refresh_from_db()
    meter = usage_summary(user=alice)
    meter_left = meter.tokens_per_day - meter.tokens_today
    if match := LEFT.match(message):
        assert (number(match.group(1)), number(match.group(2))) == (meter_left, meter.tokens_per_day)
        assert number(match.group(3) or "0") == held
        assert f"the chat so far may need up to {prompt_tokens:,} of them and a reply up to {max_tokens:,}." in message
        # And the numbers do explain the refusal: the free tokens cannot hold the prompt and the smallest reply.
        assert meter_left - held < prompt_tokens + min(64, max_tokens)
    else:
        assert message.startswith(f"You have used your {limit:,} tokens for today.")
        assert meter_left <= held
