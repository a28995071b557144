"""The spending console at /admin/spending/, and the read-only ledger in the admin.

Usage is written through budget_settle, the path every upstream call takes,
at moments frozen with time_machine: the day a call counts on is the site's
day (TIME_ZONE) when it was settled.
"""

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.db.models import Count, F, Sum
from django.test import Client

from accounts.billing.budget import budget_settle
from accounts.models import DailyUsage, UsageRecord, User
from conversations.models import ChatModel
from tests.conftest import PASSWORD
from tests.dom import parse_html

URL = "/admin/spending/"
MARCH_10_TO_12 = {"start": "2026-03-10", "end": "2026-03-12"}


@pytest.fixture
def gpt4o(catalog) -> ChatModel:
    return ChatModel.objects.get(model_id="gpt-4o")


def settle(user: User, model: ChatModel, at: str, prompt: int, completion: int, **fields) -> UsageRecord:
    """One upstream call settled at `at` (ISO, UTC) through the real write path."""
    with time_machine.travel(datetime.fromisoformat(at).replace(tzinfo=UTC), tick=False):
        return budget_settle(
            reservation_id=None,
            user_id=user.pk,
            model=model,
            kind=fields.pop("kind", UsageRecord.Kind.REPLY),
            prompt_tokens=prompt,
            completion_tokens=completion,
            **fields,
        )


@pytest.fixture
def march(alice, bob, mini, gpt4o):
    """Four calls on 10-12 March 2026 (UTC), each cost worked out by hand from the catalog's prices."""
    settle(alice, mini, "2026-03-10T09:00", 1000, 500)  # $0.00045
    settle(alice, gpt4o, "2026-03-11T10:00", 2000, 1000)  # $0.015
    settle(bob, mini, "2026-03-11T11:00", 4000, 2000)  # $0.0018
    settle(bob, gpt4o, "2026-03-12T12:00", 10000, 0, kind=UsageRecord.Kind.SUMMARY)  # $0.025


def section(response, id: str):
    return parse_html(response.content).find(id=id)


def table(response, id: str) -> list[list[str]]:
    """The rows of a section's table as the operator reads them, cell texts in order."""
    body = section(response, id).find("tbody")
    return [[cell.text for cell in row.iter() if cell.tag in {"th", "td"}] for row in body.find_all("tr")]


def totals(response) -> dict[str, str]:
    """The totals at the top of the page, by their label."""
    pairs = section(response, "spending-totals").find_all("div")
    return {pair.find("dt").text: pair.find("dd").text for pair in pairs}


def csv_lines(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


# -- What the page shows ---------------------------------------------------------------------


def test_it_shows_totals_per_day_per_model_and_top_spenders(admin_client, march):
    response = admin_client.get(URL, MARCH_10_TO_12)

    assert response.status_code == 200
    assert totals(response) == {"Spent": "$0.042250", "Tokens": "20,500", "Calls": "4"}
    assert table(response, "spending-per-day") == [
        ["Tue 10 Mar 2026", "1", "1,500", "$0.000450"],
        ["Wed 11 Mar 2026", "2", "9,000", "$0.016800"],
        ["Thu 12 Mar 2026", "1", "10,000", "$0.025000"],
    ]
    assert table(response, "spending-per-model") == [
        ["GPT-4o", "2", "13,000", "$0.040000"],
        ["GPT-4o mini", "2", "7,500", "$0.002250"],
    ]
    assert table(response, "spending-top-spenders") == [
        ["bob", "2", "16,000", "$0.026800", "63.4%"],
        ["alice", "2", "4,500", "$0.015450", "36.6%"],
    ]
    assert table(response, "spending-per-user") == [
        ["alice", "2", "4,500", "$0.015450", "limits"],
        ["bob", "2", "16,000", "$0.026800", "limits"],
    ]


def test_its_figures_are_the_sums_of_the_usage_records(admin_client, alice, bob, mini, gpt4o):
    # Replies and summaries, estimated and cached, over three days, both users and both models.
    for n in range(24):
        settle(
            alice if n % 3 else bob,
            gpt4o if n % 4 == 0 else mini,
            f"2026-03-{10 + n % 3}T{n % 24:02}:15",
            prompt=137 * n + 11,
            completion=53 * (n % 7),
            cached_tokens=(137 * n) // 2 if n % 5 == 0 else 0,
            estimated=n % 6 == 0,
            kind=UsageRecord.Kind.SUMMARY if n % 8 == 0 else UsageRecord.Kind.REPLY,
        )
    records = UsageRecord.objects.order_by()

    def sums(*group_by):
        figures = {
            "calls": Count("id"),
            "tokens": Sum(F("prompt_tokens") + F("completion_tokens")),
            "cost": Sum("cost"),
        }
        if not group_by:
            return records.aggregate(**figures)
        return {row.pop(group_by[0]): row for row in records.values(*group_by).annotate(**figures)}

    spending = admin_client.get(URL, MARCH_10_TO_12).context["spending"]

    assert {k: spending.totals[k] for k in ("calls", "tokens", "cost")} == sums()
    assert {row["day"]: {k: row[k] for k in ("calls", "tokens", "cost")} for row in spending.days} == sums("day")
    assert {row["user_id"]: {k: row[k] for k in ("calls", "tokens", "cost")} for row in spending.users} == sums(
        "user_id"
    )
    assert {row["model_id"]: {k: row[k] for k in ("calls", "tokens", "cost")} for row in spending.models} == sums(
        "model_id"
    )
    assert spending.totals["calls"] == 24


def test_the_date_range_leaves_out_the_days_outside_it(admin_client, alice, mini):
    settle(alice, mini, "2026-03-09T23:59", 1000, 0)
    settle(alice, mini, "2026-03-10T00:00", 2000, 0)
    settle(alice, mini, "2026-03-12T23:59", 3000, 0)
    settle(alice, mini, "2026-03-13T00:00", 4000, 0)

    response = admin_client.get(URL, MARCH_10_TO_12)

    assert totals(response) == {"Spent": "$0.000750", "Tokens": "5,000", "Calls": "2"}
    assert [row[0] for row in table(response, "spending-per-day")] == [
        "Tue 10 Mar 2026",
        "Wed 11 Mar 2026",
        "Thu 12 Mar 2026",
    ]


@pytest.mark.parametrize(
    ("time_zone", "day", "other_day"),
    [("UTC", "2026-03-10", "2026-03-11"), ("Asia/Tokyo", "2026-03-11", "2026-03-10")],
)
def test_a_call_counts_on_the_day_of_the_sites_time_zone(
    admin_client, alice, mini, settings, time_zone, day, other_day
):
    settings.TIME_ZONE = time_zone
    settle(alice, mini, "2026-03-10T23:30", 1000, 0)

    on_day = admin_client.get(URL, {"start": day, "end": day})
    on_other_day = admin_client.get(URL, {"start": other_day, "end": other_day})

    assert on_day.context["spending"].totals["calls"] == 1
    assert on_other_day.context["spending"].totals["calls"] == 0
    assert "Nothing was spent in this range." in section(on_other_day, "spending-per-day").text


def test_it_shows_the_last_30_days_of_the_sites_time_zone_by_default(admin_client, alice, mini, settings):
    settings.TIME_ZONE = "Asia/Tokyo"
    settle(alice, mini, "2026-03-03T00:00", 1000, 0)  # 3 March, 09:00 in Tokyo: the first day shown
    settle(alice, mini, "2026-03-02T14:59", 2000, 0)  # 2 March, 23:59 in Tokyo: one day too early

    with time_machine.travel(datetime(2026, 3, 31, 20, 0, tzinfo=UTC), tick=False):  # 1 April in Tokyo
        response = admin_client.get(URL)

    assert response.status_code == 200
    form = parse_html(response.content).find("form", action=URL)
    assert form.form_data() == {"start": "2026-03-03", "end": "2026-04-01", "user": "", "model": ""}
    assert len(response.context["spending"].days) == 30
    assert totals(response) == {"Spent": "$0.000150", "Tokens": "1,000", "Calls": "1"}


def link(response, section_id: str, text: str) -> str:
    """Where a link of the page leads, as a path the test client can follow."""
    return URL + section(response, section_id).find("a", text=text).attrs["href"]


def test_a_spenders_name_narrows_the_page_and_its_csv_to_them(admin_client, march):
    page = admin_client.get(URL, MARCH_10_TO_12)

    bob = admin_client.get(link(page, "spending-top-spenders", "bob"))

    assert bob.status_code == 200
    assert totals(bob) == {"Spent": "$0.026800", "Tokens": "16,000", "Calls": "2"}
    assert [row[0] for row in table(bob, "spending-per-user")] == ["bob"]
    bobs_csv = admin_client.get(URL + parse_html(bob.content).find("a", text="Export as CSV").attrs["href"])
    assert [line[1] for line in csv_lines(bobs_csv)[1:]] == ["bob", "bob"]


def test_a_models_name_narrows_the_page_to_it_keeping_the_user(admin_client, march):
    alices = admin_client.get(URL, MARCH_10_TO_12 | {"user": "alice"})

    response = admin_client.get(link(alices, "spending-per-model", "GPT-4o"))

    assert totals(response) == {"Spent": "$0.015000", "Tokens": "3,000", "Calls": "1"}
    assert parse_html(response.content).find("form", action=URL).form_data() == MARCH_10_TO_12 | {
        "user": "alice",
        "model": "gpt-4o",
    }


def test_a_long_list_of_users_stops_at_1000_and_says_so(admin_client, mini):
    users = User.objects.bulk_create(User(username=f"user{n:04}") for n in range(1001))
    DailyUsage.objects.bulk_create(
        DailyUsage(user=user, model=mini, day=date(2026, 3, 10), calls=1, tokens=10, cost=Decimal("0.01"))
        for user in users
    )

    response = admin_client.get(URL, MARCH_10_TO_12)

    listed = table(response, "spending-per-user")
    assert (len(listed), listed[0][0], listed[-1][0]) == (1000, "user0000", "user0999")
    assert "The first 1000 of 1001 users by name." in section(response, "spending-per-user").text
    assert totals(response) == {"Spent": "$10.010000", "Tokens": "10,010", "Calls": "1,001"}


def test_the_chart_is_an_inline_svg_with_a_text_alternative(admin_client, march):
    response = admin_client.get(URL, MARCH_10_TO_12)

    page = parse_html(response.content)
    chart = page.find("svg", role="img")
    assert chart.attrs["aria-label"] == (
        "Dollars spent per day from 10 March 2026 to 12 March 2026: $0.042250 in all, "
        "the most $0.025000 on 12 March 2026. The table below has every day."
    )
    bars = chart.find_all("rect", class_="bar")
    assert len(bars) == 3
    # Heights in proportion to the day's dollars, the busiest day the full 184 units of the drawing.
    assert [float(bar.attrs["height"]) for bar in bars] == pytest.approx(
        [184 * 0.45 / 25, 184 * 16.8 / 25, 184], abs=0.01
    )
    assert [title.text for title in chart.find_all("title")] == [
        "Tue 10 Mar 2026: $0.000450, 1,500 tokens, 1 calls",
        "Wed 11 Mar 2026: $0.016800, 9,000 tokens, 2 calls",
        "Thu 12 Mar 2026: $0.025000, 10,000 tokens, 1 calls",
    ]
    # Nothing loaded from elsewhere: only the admin's own static files.
    assets = [el.attrs["src"] for el in page.find_all("script", src=True)]
    assets += [el.attrs["href"] for el in page.find_all("link", rel="stylesheet")]
    assert assets
    assert all(asset.startswith("/static/") for asset in assets), assets


def test_the_admin_index_links_to_the_console(admin_client):
    response = admin_client.get("/admin/")

    assert parse_html(response.content).find("a", text="Spend and tokens per day, user and model").attrs["href"] == URL


# -- CSV -----------------------------------------------------------------------------------------


def test_the_csv_has_a_line_per_day_user_and_model_with_exact_dollars(admin_client, march, alice, mini):
    settle(alice, mini, "2026-03-10T18:00", 3, 1)  # a second call in alice's 10 March line

    response = admin_client.get(URL, MARCH_10_TO_12 | {"format": "csv"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="spending-2026-03-10-to-2026-03-12.csv"'
    assert csv_lines(response) == [
        ["day", "user", "model", "calls", "tokens", "cost_usd"],
        ["2026-03-10", "alice", "gpt-4o-mini", "2", "1504", "0.00045105"],
        ["2026-03-11", "alice", "gpt-4o", "1", "3000", "0.01500000"],
        ["2026-03-11", "bob", "gpt-4o-mini", "1", "6000", "0.00180000"],
        ["2026-03-12", "bob", "gpt-4o", "1", "10000", "0.02500000"],
    ]


def test_the_csv_adds_up_to_the_pages_totals(admin_client, march):
    lines = csv_lines(admin_client.get(URL, MARCH_10_TO_12 | {"format": "csv"}))[1:]
    totals = admin_client.get(URL, MARCH_10_TO_12).context["spending"].totals

    assert sum(int(line[3]) for line in lines) == totals["calls"]
    assert sum(int(line[4]) for line in lines) == totals["tokens"]
    assert sum(Decimal(line[5]) for line in lines) == totals["cost"]


def test_the_csv_follows_the_user_and_model_filters(admin_client, march):
    response = admin_client.get(URL, MARCH_10_TO_12 | {"user": "alice", "model": "gpt-4o", "format": "csv"})

    assert csv_lines(response)[1:] == [["2026-03-11", "alice", "gpt-4o", "1", "3000", "0.01500000"]]


def test_the_csv_keeps_spreadsheets_from_running_a_username_as_a_formula(admin_client, mini):
    settle(User.objects.create_user("+1+2", password=PASSWORD), mini, "2026-03-10T09:00", 1000, 0)

    response = admin_client.get(URL, MARCH_10_TO_12 | {"format": "csv"})

    assert csv_lines(response)[1][1] == "'+1+2"


# -- Bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"start": "2026-02-30"}, "Enter a valid date."),
        ({"start": "yesterday", "end": "2026-03-12"}, "Enter a valid date."),
        ({"start": "2026-03-12", "end": "2026-03-10"}, "The end date is before the start date."),
        ({"start": "2025-03-10", "end": "2026-03-11"}, "That range has 367 days; choose at most 366."),
        ({"start": "0001-01-01", "end": "9999-12-31"}, "That range has 3,652,059 days; choose at most 366."),
        ({"user": "nobody"}, "There is no user called “nobody”."),
        ({"model": "gpt-9"}, "Select a valid choice. That choice is not one of the available choices."),
    ],
)
def test_bad_filters_are_a_400_that_says_what_is_wrong(admin_client, query, error):
    for fmt in ("html", "csv"):
        response = admin_client.get(URL, query | {"format": fmt})

        assert response.status_code == 400
        assert response["Content-Type"] == "text/html; charset=utf-8"
        assert error in parse_html(response.content).find(id="content-main").text


@pytest.mark.parametrize(("start", "end"), [("2025-01-01", "2025-12-31"), ("2024-01-01", "2024-12-31")])
def test_a_whole_year_is_allowed_leap_years_too(admin_client, start, end):
    response = admin_client.get(URL, {"start": start, "end": end})

    assert response.status_code == 200
    assert len(response.context["spending"].days) in {365, 366}


# -- Who may see it ----------------------------------------------------------------------------


def test_anonymous_is_sent_to_the_admin_login(db):
    response = Client().get(URL)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={URL}"


def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(alice_client, march):
    response = alice_client.get(URL, {"format": "csv"})

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_without_the_permission_to_view_usage_is_refused(alice, catalog):
    alice.is_staff = True
    alice.save()
    client = Client()
    client.force_login(alice)

    assert client.get(URL).status_code == 403
    assert client.get(URL, {"format": "csv"}).status_code == 403
    assert not parse_html(client.get("/admin/").content).find_all("a", href=URL)


def test_staff_allowed_to_view_daily_usage_see_the_console(alice, catalog, march):
    alice.is_staff = True
    alice.save()
    alice.user_permissions.add(Permission.objects.get(codename="view_dailyusage"))
    client = Client()
    client.force_login(alice)

    response = client.get(URL, MARCH_10_TO_12)

    assert response.status_code == 200
    assert response.context["spending"].totals["calls"] == 4
    assert parse_html(client.get("/admin/").content).find_all("a", href=URL)


def test_a_post_is_a_405(admin_client):
    assert admin_client.post(URL, MARCH_10_TO_12).status_code == 405


# -- The ledger in the admin: read-only ----------------------------------------------------------


def test_the_usage_records_are_listed_newest_first(admin_client, march):
    response = admin_client.get("/admin/accounts/usagerecord/")

    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert shown == list(UsageRecord.objects.order_by("-created_at"))
    assert b"bob" in response.content and b"summary" in response.content


def test_the_usage_records_filter_by_kind(admin_client, march):
    response = admin_client.get("/admin/accounts/usagerecord/", {"kind__exact": "summary"})

    assert [record.kind for record in response.context["cl"].result_list] == ["summary"]


def test_usage_records_cannot_be_added_changed_or_deleted(admin_client, march):
    record = UsageRecord.objects.first()
    base = "/admin/accounts/usagerecord/"

    assert admin_client.get(f"{base}add/").status_code == 403
    assert admin_client.get(f"{base}{record.pk}/delete/").status_code == 403
    view = admin_client.get(f"{base}{record.pk}/change/")
    assert view.status_code == 200
    assert not parse_html(view.content).find_all("input", type="submit")
    admin_client.post(f"{base}{record.pk}/change/", {"prompt_tokens": 1})
    assert UsageRecord.objects.get(pk=record.pk).prompt_tokens == record.prompt_tokens


def test_the_daily_usage_is_listed_and_read_only(admin_client, march):
    response = admin_client.get("/admin/accounts/dailyusage/")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == DailyUsage.objects.count() == 4
    assert admin_client.get("/admin/accounts/dailyusage/add/").status_code == 403
