"""Tokens per hour, beside the day's and the month's (the Flutter seed's per-user hourly token budget).

The hour is the clock hour in the site's TIME_ZONE. It is held like the other
budgets: reserved before the call, in the same locked transaction.
"""

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from accounts.billing.budget import MIN_REPLY_TOKENS, QuotaExceeded, budget_reserve
from accounts.billing.prompt_bound import prompt_tokens_bound
from accounts.models import AuditEntry, Reservation, User, hour_end, hour_start
from accounts.services import api_key_create
from conversations.models import Message
from tests.accounts.test_quotas import article_of, latest_reply, send_and_finish, set_limits, spend
from tests.dom import parse_html

pytestmark = pytest.mark.django_db(transaction=True)

HI_PROMPT = prompt_tokens_bound([{"role": "user", "content": "Hi"}])
# 10:20 in UTC: 40 minutes left in the hour, 13 h 40 min in the day.
MORNING = datetime(2026, 6, 15, 10, 20, tzinfo=UTC)


def frozen_at(moment: datetime):
    return time_machine.travel(moment, tick=False)


@pytest.mark.parametrize("own_limit", [True, False], ids=["own-limit", "site-default"])
async def test_over_the_hours_tokens_the_chat_says_which_window_and_when_it_resets(
    alice_async, alice, upstream, settings, own_limit
):
    settings.TIME_ZONE = "UTC"
    if own_limit:
        await set_limits(alice, tokens_per_hour=2000, tokens_per_day=1_000_000)
    else:
        settings.QUOTA_TOKENS_PER_HOUR = 2000

    with frozen_at(MORNING):
        await sync_to_async(spend)(alice, prompt_tokens=1500, completion_tokens=500)
        response = await alice_async.post("/c/new/messages/", {"text": "One more question"})
        page = await alice_async.get(response["Location"])

    reply = await latest_reply()
    said = "You have used your 2,000 tokens for this hour. It resets at 11:00 on 15 June (UTC), in 40 min."
    assert article_of(page.content, reply).find(role="alert").text == said
    assert reply.error_code == "tokens_per_hour"
    assert await Message.objects.filter(role=Message.Role.USER, content="One more question").aexists()
    assert upstream.requests == []
    assert not await Reservation.objects.aexists()


async def test_the_next_hour_has_its_tokens_again_while_the_day_keeps_counting(alice_async, alice, upstream, settings):
    settings.TIME_ZONE = "UTC"
    await set_limits(alice, tokens_per_hour=5000, tokens_per_day=20_000)
    with frozen_at(MORNING):
        await sync_to_async(spend)(alice, prompt_tokens=5000)
    with frozen_at(MORNING + timedelta(minutes=41)):  # 11:01
        reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.COMPLETE
    # The hour's room (5,000 less the prompt) and the day's (15,000 less the prompt): the smaller wins.
    assert upstream.requests[0].json["max_tokens"] == min(4096, 5000 - HI_PROMPT)


@pytest.mark.parametrize("room", [MIN_REPLY_TOKENS, 300])
async def test_max_tokens_shrinks_to_the_tokens_left_this_hour(alice_async, alice, upstream, settings, room):
    settings.TIME_ZONE = "UTC"
    await set_limits(alice, tokens_per_hour=10_000)
    with frozen_at(MORNING):
        await sync_to_async(spend)(alice, prompt_tokens=10_000 - HI_PROMPT - room)
        reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.COMPLETE
    assert upstream.requests[0].json["max_tokens"] == room


def test_calls_in_flight_are_held_against_the_hour(alice, mini):
    User.objects.filter(pk=alice.pk).update(tokens_per_hour=1000)
    budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=800)

    with pytest.raises(QuotaExceeded) as refused:
        budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=800)

    assert refused.value.code == "tokens_per_hour"
    assert Reservation.objects.count() == 1


async def test_an_hour_not_used_up_is_refused_in_the_numbers_its_meter_shows(alice_async, alice, upstream, settings):
    settings.TIME_ZONE = "UTC"
    await set_limits(alice, tokens_per_hour=2000, tokens_per_day=1_000_000)

    with frozen_at(MORNING):
        await sync_to_async(spend)(alice, prompt_tokens=1900)
        response = await alice_async.post("/c/new/messages/", {"text": "One more question"})
        page = await alice_async.get(response["Location"])

    said = article_of(page.content, await latest_reply()).find(role="alert").text
    assert said.startswith("100 of your 2,000 tokens for this hour are left; the chat so far may need up to ")
    assert said.endswith("It resets at 11:00 on 15 June (UTC), in 40 min.")
    assert upstream.requests == []


async def test_the_api_refuses_with_insufficient_quota_naming_the_hour(alice, catalog, upstream, settings):
    settings.TIME_ZONE = "UTC"
    await set_limits(alice, tokens_per_hour=1000)
    secret = (await sync_to_async(api_key_create)(user=alice, name="app"))[1]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    with frozen_at(MORNING):
        await sync_to_async(spend)(alice, prompt_tokens=1000)
        response = await AsyncClient().post(
            "/v1/chat/completions", json.dumps(body), content_type="application/json",
            headers={"Authorization": f"Bearer {secret}"},
        )  # fmt: skip

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert error["message"].startswith("You have used your 1,000 tokens for this hour. It resets at 11:00")
    assert upstream.requests == []


def test_the_hour_follows_the_sites_time_zone(alice, mini, settings):
    """In India (UTC+5:30) the clock hour starts at half past in UTC."""
    settings.TIME_ZONE = "Asia/Kolkata"
    User.objects.filter(pk=alice.pk).update(tokens_per_hour=1000)
    with frozen_at(datetime(2026, 6, 15, 10, 29, tzinfo=UTC)):  # 15:59 in India
        spend(alice, prompt_tokens=1000)
        with pytest.raises(QuotaExceeded) as refused:
            budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=10, max_tokens=100)
    with frozen_at(datetime(2026, 6, 15, 10, 31, tzinfo=UTC)):  # 16:01 in India: a new hour
        budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=10, max_tokens=100)

    assert "It resets at 16:00 on 15 June (Asia/Kolkata), in 1 min." in refused.value.user_message


@given(moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_every_moment_is_in_exactly_one_hour_of_one_hour(moment):
    """In whole-hour and half-hour time zones, and across DST changes."""
    for zone in ("UTC", "Europe/Paris", "Asia/Kolkata"):
        with timezone.override(zone):
            start, end = hour_start(moment), hour_end(moment)
            assert start <= moment < end
            assert end - start == timedelta(hours=1)
            assert timezone.localtime(end).minute == 0


# -- Where users and staff see it -----------------------------------------------------------------


def test_the_usage_page_shows_the_hour_beside_the_day(alice, alice_client, settings):
    settings.TIME_ZONE = "UTC"
    User.objects.filter(pk=alice.pk).update(tokens_per_hour=4000)
    with frozen_at(MORNING):
        spend(alice, prompt_tokens=1000)
        page = parse_html(alice_client.get("/accounts/usage/").content)

    lines = [" ".join(p.text.split()) for p in page.find("div", class_="usage-meter").find_all("p")]
    assert lines[0] == "Tokens this hour: 1000 of 4000 25%"
    assert lines[1].startswith("Tokens today: 1000 (no limit)")
    assert lines[-1].startswith("The hour's tokens reset at 11:00. The day's tokens reset at 00:00 on 16 June")


def test_without_an_hourly_limit_the_meter_shows_no_hour(alice, alice_client):
    page = parse_html(alice_client.get("/accounts/usage/").content)

    assert "this hour" not in page.find("div", class_="usage-meter").text


def test_staff_set_the_hourly_limit_in_the_users_limits_and_it_is_audited(admin_client, alice):
    url = f"/admin/accounts/user/{alice.pk}/change/"
    form = parse_html(admin_client.get(url).content).find("form", id="user_form")
    assert form.form_data()["tokens_per_hour"] == ""  # in the form, empty: the site's default

    response = admin_client.post(url, form.form_data() | {"tokens_per_hour": "50000"})

    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.tokens_per_hour == 50_000
    entry = AuditEntry.objects.get(subject="tokens_per_hour")
    assert (entry.actor_label, entry.old_value, entry.new_value) == ("root", "", "50000")
    assert Client().get(url).status_code == 302  # and only staff can
