"""Users see their own usage: GET /accounts/usage/, and the small meter in the chat's sidebar."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db.models import F, Sum
from django.test import Client

from accounts.billing.budget import budget_settle
from accounts.models import UsageRecord, User
from conversations.models import ChatModel, Message
from tests.conftest import watch_reply
from tests.dom import parse_html

pytestmark = pytest.mark.django_db

URL = "/accounts/usage/"
# Noon in Paris on 15 June 2026.
NOW = datetime(2026, 6, 15, 10, 0, tzinfo=UTC)


def settle_at(moment: datetime, user: User, model_id: str, prompt_tokens: int, completion_tokens: int, kind="reply"):
    with time_machine.travel(moment, tick=False):
        budget_settle(
            reservation_id=None,
            user_id=user.pk,
            model=ChatModel.objects.get(model_id=model_id),
            kind=kind,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


@pytest.fixture(autouse=True)
def _costs_shown(settings):
    """These tests are about dollars too: the site shows them (see test_usage_history.py for when it does not)."""
    settings.SHOW_COSTS = True


@pytest.fixture
def paris(settings):
    settings.TIME_ZONE = "Europe/Paris"


@pytest.fixture
def history(paris, alice, bob, catalog):
    """Alice's calls today, earlier this month and last month; Bob's today."""
    settle_at(NOW, alice, "gpt-4o-mini", 120_000, 30_000)  # $0.036
    settle_at(NOW, alice, "gpt-4o", 10_000, 2_000, kind=UsageRecord.Kind.SUMMARY)  # $0.045
    settle_at(
        datetime(2026, 5, 31, 22, 30, tzinfo=UTC), alice, "gpt-4o", 40_000, 10_000
    )  # $0.20 at 00:30 on 1 June, Paris
    settle_at(datetime(2026, 5, 31, 21, 30, tzinfo=UTC), alice, "gpt-4o", 100_000, 100_000)  # 23:30 on 31 May, Paris
    settle_at(NOW, bob, "gpt-4o", 777_777, 0)


def ledger(user: User, **days) -> tuple[int, Decimal]:
    """What the user's usage records add up to: tokens and dollars."""
    totals = UsageRecord.objects.filter(user=user, **days).aggregate(
        tokens=Sum(F("prompt_tokens") + F("completion_tokens")), cost=Sum("cost")
    )
    return totals["tokens"] or 0, totals["cost"] or Decimal(0)


def open_usage(client: Client):
    with time_machine.travel(NOW, tick=False):
        response = client.get(URL)
    assert response.status_code == 200
    return parse_html(response.content)


def line_of(page, label: str) -> str:
    """The text of the line a usage figure is on."""
    return page.find("label", text=label).parent.text


def test_it_shows_tokens_today_and_dollars_this_month_against_the_limits(alice, alice_client, history):
    User.objects.filter(pk=alice.pk).update(tokens_per_day=200_000, usd_per_month=Decimal("2.00"))

    page = open_usage(alice_client)

    tokens_today, _ = ledger(alice, day="2026-06-15")
    _, dollars_this_month = ledger(alice, day__gte="2026-06-01", day__lte="2026-06-15")
    assert (tokens_today, dollars_this_month) == (162_000, Decimal("0.281"))  # the premise, in round figures
    assert page.find("h1").text == "Your usage"
    assert line_of(page, "Tokens today") == "Tokens today: 162000 of 200000 81%"
    assert line_of(page, "Spent this month") == "Spent this month: $0.2810 of $2.00 14%"
    tokens_meter, dollars_meter = page.labelled("Tokens today"), page.labelled("Spent this month")
    assert (tokens_meter.tag, tokens_meter.attrs["value"], tokens_meter.attrs["max"]) == ("meter", "81", "100")
    assert (dollars_meter.tag, dollars_meter.attrs["value"], dollars_meter.attrs["max"]) == ("meter", "14", "100")
    assert (
        "The day's tokens reset at 00:00 on 16 June, the month’s spending on 1 July (Europe/Paris)."
        in page.find(class_="usage-meter").text
    )


def test_the_sites_defaults_are_the_limits_of_a_user_without_their_own(alice, alice_client, history, settings):
    settings.QUOTA_TOKENS_PER_DAY = 1_000_000
    settings.QUOTA_USD_PER_MONTH = Decimal("20")

    page = open_usage(alice_client)

    assert line_of(page, "Tokens today") == "Tokens today: 162000 of 1000000 16%"
    assert line_of(page, "Spent this month") == "Spent this month: $0.2810 of $20.00 1%"


def test_without_limits_it_shows_the_usage_and_no_meter(alice, alice_client, history, settings):
    settings.QUOTA_TOKENS_PER_DAY = settings.QUOTA_USD_PER_MONTH = None

    page = open_usage(alice_client)

    assert line_of(page, "Tokens today") == "Tokens today: 162000 (no limit)"
    assert line_of(page, "Spent this month") == "Spent this month: $0.2810 (no limit)"
    assert page.find_all("meter") == []


def test_past_the_limit_the_meter_is_full(alice, alice_client, history):
    # An admin lowered the limits below what was already spent.
    User.objects.filter(pk=alice.pk).update(tokens_per_day=100_000, usd_per_month=Decimal("0.10"))

    page = open_usage(alice_client)

    assert page.labelled("Tokens today").attrs["value"] == "100"
    assert page.labelled("Spent this month").attrs["value"] == "100"
    assert line_of(page, "Tokens today").startswith("Tokens today: 162000 of 100000")


def test_another_users_usage_never_shows(alice, bob, alice_client, history):
    bob_client = Client()
    bob_client.force_login(bob)

    alices = open_usage(alice_client)
    bobs = open_usage(bob_client)

    assert line_of(alices, "Tokens today").startswith("Tokens today: 162000")
    assert "777777" not in alices.find("main").text
    assert line_of(bobs, "Tokens today").startswith("Tokens today: 777777")
    assert line_of(bobs, "Spent this month").startswith("Spent this month: $1.9444")
    assert "162000" not in bobs.find("main").text


def test_the_chat_sidebar_shows_the_small_meter_linking_to_the_page(alice, alice_client, history):
    User.objects.filter(pk=alice.pk).update(tokens_per_day=200_000, usd_per_month=Decimal("2.00"))

    with time_machine.travel(NOW, tick=False):
        page = parse_html(alice_client.get("/").content)

    link = page.find("a", class_="usage-link")
    assert link.attrs["href"] == URL
    assert [(meter.attrs["id"], meter.attrs["value"]) for meter in link.find_all("meter")] == [
        ("meter-tokens-sidebar", "81"),
        ("meter-usd-sidebar", "14"),
    ]
    assert "162000 of 200000" in link.text
    assert "reset" not in link.text  # the details are on the usage page


def test_anonymous_is_sent_to_login(db):
    response = Client().get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={URL}"


def test_post_is_not_allowed(alice_client):
    response = alice_client.post(URL)

    assert response.status_code == 405


@pytest.mark.django_db(transaction=True)
async def test_a_finished_reply_counts_on_the_page_at_once(alice_async, alice, upstream):
    await User.objects.filter(pk=alice.pk).aupdate(tokens_per_day=10_000)
    await alice_async.post("/c/new/messages/", {"text": "Hi"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await watch_reply(alice_async, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    await reply.arefresh_from_db()

    page = parse_html((await alice_async.get(URL)).content)

    used = reply.prompt_tokens + reply.completion_tokens
    assert used > 0
    assert line_of(page, "Tokens today").startswith(f"Tokens today: {used} of 10000")
