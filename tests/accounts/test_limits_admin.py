"""The operators' console for limits: the "Limits" fieldset, its audit trail, usage columns, the 80% filter."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from accounts.billing.budget import budget_settle
from accounts.models import AuditEntry, DailyUsage, User, local_today, month_start
from conversations.models import ChatModel
from tests.dom import parse_html

USERS = "/admin/accounts/user/"
AUDIT = "/admin/accounts/auditentry/"


def rows(response) -> list[dict[str, str]]:
    """The change list's table as the operator reads it: each row's cell texts by column heading."""
    tables = parse_html(response.content).find_all("table", id="result_list")
    if not tables:  # nothing matches
        return []
    table = tables[0]
    headings = [(th.find_all(class_="text") or [th])[0].text for th in table.find("thead").find_all("th")]
    return [
        dict(zip(headings, [cell.text for cell in row.iter() if cell.tag in {"th", "td"}], strict=True))
        for row in table.find("tbody").find_all("tr")
    ]


def change_form(client: Client, user: User) -> tuple[str, dict]:
    """The user's change page and what submitting it unchanged would send (multiple choices as lists)."""
    url = f"{USERS}{user.pk}/change/"
    response = client.get(url)
    assert response.status_code == 200
    form = parse_html(response.content).find("form", id="user_form")
    data = {name: value for name, value in form.form_data().items() if not name.startswith("_")}
    data["_save"] = "Save"  # the button a browser would send
    for select in form.find_all("select", multiple=True):
        data[select.attrs["name"]] = [
            option.attrs["value"] for option in select.find_all("option") if "selected" in option.attrs
        ]
    return url, data


def limits_of(user: User) -> tuple:
    user.refresh_from_db()
    return (
        user.tokens_per_day,
        user.usd_per_month,
        user.max_tokens_per_request,
        sorted(user.allowed_models.values_list("model_id", flat=True)),
    )


def test_the_user_page_has_a_limits_fieldset(admin_client, alice):
    page = parse_html(admin_client.get(f"{USERS}{alice.pk}/change/").content)

    fieldset = next(f for f in page.find_all("fieldset") if f.find_all("h2", text="Limits"))
    names = {control.attrs["name"] for control in fieldset.iter() if control.tag in {"input", "select"}}
    assert {"tokens_per_day", "usd_per_month", "max_tokens_per_request", "allowed_models"} <= names
    assert "Every change is audited." in fieldset.text


def test_the_limits_come_right_after_the_name_and_password(admin_client, alice):
    page = parse_html(admin_client.get(f"{USERS}{alice.pk}/change/").content)

    form = page.find("form", id="user_form")
    headings = [h2.text for fieldset in form.find_all("fieldset") for h2 in fieldset.find_all("h2")]
    assert headings[:3] == ["Limits", "Personal info", "Permissions"]  # the first fieldset has no heading


def test_a_superuser_sets_limits_and_each_change_is_audited(admin_client, root, alice, mini):
    url, data = change_form(admin_client, alice)
    before = timezone.now()

    response = admin_client.post(
        url,
        data
        | {
            "tokens_per_day": "50000",
            "usd_per_month": "12.50",
            "max_tokens_per_request": "1024",
            "allowed_models": [str(mini.pk)],
        },
    )

    assert response.status_code == 302, response.content[:2000]
    assert limits_of(alice) == (50000, Decimal("12.50"), 1024, ["gpt-4o-mini"])
    entries = {entry.subject: entry for entry in AuditEntry.objects.filter(user=alice)}
    assert {subject: (entry.old_value, entry.new_value) for subject, entry in entries.items()} == {
        "tokens_per_day": ("", "50000"),
        "usd_per_month": ("", "12.50"),
        "max_tokens_per_request": ("", "1024"),
        "allowed_models": ("all enabled", "gpt-4o-mini"),
    }
    for entry in entries.values():
        assert (entry.actor, entry.actor_label, entry.action) == (root, "root", AuditEntry.Action.LIMIT_CHANGED)
        assert before <= entry.created_at <= timezone.now()


def test_the_audit_list_shows_who_changed_what(admin_client, alice):
    url, data = change_form(admin_client, alice)
    admin_client.post(url, data | {"tokens_per_day": "50000"})
    url, data = change_form(admin_client, alice)
    admin_client.post(url, data | {"tokens_per_day": "80000"})

    response = admin_client.get(AUDIT)

    assert response.status_code == 200
    table = [
        (row["Actor label"], row["Action"], row["User"], row["Subject"], row["Old value"], row["New value"])
        for row in rows(response)
    ]
    assert table == [  # newest first
        ("root", "limit changed", "alice", "tokens_per_day", "50000", "80000"),
        ("root", "limit changed", "alice", "tokens_per_day", "-", "50000"),  # "-": it had none
    ]
    assert all(row["Created at"] for row in rows(response))


def test_emptying_a_limit_puts_back_the_site_default_and_is_audited(admin_client, alice, mini):
    alice.tokens_per_day, alice.usd_per_month = 50000, Decimal("5.00")
    alice.save()
    alice.allowed_models.set([mini])
    url, data = change_form(admin_client, alice)
    assert (data["tokens_per_day"], data["usd_per_month"]) == ("50000", "5.00")

    admin_client.post(url, data | {"tokens_per_day": "", "usd_per_month": "", "allowed_models": []})

    assert limits_of(alice) == (None, None, None, [])
    assert {(e.subject, e.old_value, e.new_value) for e in AuditEntry.objects.all()} == {
        ("tokens_per_day", "50000", ""),
        ("usd_per_month", "5.00", ""),
        ("allowed_models", "gpt-4o-mini", "all enabled"),
    }


def test_saving_without_changing_a_limit_writes_no_audit_entry(admin_client, alice):
    alice.tokens_per_day = 50000
    alice.save()
    url, data = change_form(admin_client, alice)

    response = admin_client.post(url, data | {"email": "alice@example.com", "first_name": "Alice"})

    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.email, alice.tokens_per_day) == ("alice@example.com", 50000)
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("tokens_per_day", "-1"), ("tokens_per_day", "lots"), ("usd_per_month", "1.234"), ("usd_per_month", "-5")],
)
def test_a_bad_limit_is_refused_on_the_form_and_nothing_changes(admin_client, alice, field, value):
    url, data = change_form(admin_client, alice)

    response = admin_client.post(url, data | {field: value})

    assert response.status_code == 200  # the form again, with the error
    assert parse_html(response.content).find_all(class_="errorlist")
    assert limits_of(alice) == (None, None, None, [])
    assert not AuditEntry.objects.exists()


def test_audit_entries_cannot_be_added_changed_or_deleted(admin_client, alice):
    url, data = change_form(admin_client, alice)
    admin_client.post(url, data | {"tokens_per_day": "50000"})
    entry = AuditEntry.objects.get()

    listing = parse_html(admin_client.get(AUDIT).content)
    assert not listing.find_all("a", href=f"{AUDIT}add/")
    assert not listing.find_all("option", value="delete_selected")
    assert admin_client.get(f"{AUDIT}add/").status_code == 403
    page = admin_client.get(f"{AUDIT}{entry.pk}/change/")
    assert page.status_code == 200
    assert not parse_html(page.content).find_all("input", type="submit")
    admin_client.post(f"{AUDIT}{entry.pk}/change/", {"old_value": "forged", "new_value": "forged"})
    assert admin_client.get(f"{AUDIT}{entry.pk}/delete/").status_code == 403
    assert admin_client.post(f"{AUDIT}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_client.post(AUDIT, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})

    assert list(AuditEntry.objects.values_list("old_value", "new_value")) == [("", "50000")]


# -- Usage against limits in the user list --------------------------------------------------------


def usage(user: User, model: ChatModel, *, tokens: int = 0, cost: Decimal = Decimal(0), day=None) -> None:
    """Spending on record for a day (today unless given), as budget_settle rolls it up."""
    DailyUsage.objects.create(user=user, model=model, day=day or local_today(), calls=1, tokens=tokens, cost=cost)


def user_rows(client: Client, query: str = "") -> dict[str, dict[str, str]]:
    response = client.get(USERS + query)
    assert response.status_code == 200
    return {row["Username"]: row for row in rows(response)}


def test_the_user_list_shows_tokens_today_and_spending_this_month_against_the_limits(
    admin_client, alice, bob, mini, settings
):
    settings.QUOTA_TOKENS_PER_DAY = None
    settings.QUOTA_USD_PER_MONTH = Decimal("10")
    alice.tokens_per_day = 10_000
    alice.save()
    # 6,000 in and 2,500 out on gpt-4o-mini: $0.0009 + $0.0015.
    budget_settle(
        reservation_id=None, user_id=alice.pk, model=mini, kind="reply", prompt_tokens=6000, completion_tokens=2500
    )
    today = local_today()
    usage(alice, mini, tokens=99_999, cost=Decimal("1"), day=today - timedelta(days=1))  # not today
    # Last month, and never the day before today (on the 1st, that day is last month's last).
    usage(alice, mini, tokens=1, cost=Decimal("3"), day=month_start(today) - timedelta(days=2))

    listing = user_rows(admin_client)

    tokens = [listing["alice"]["Tokens today"], listing["bob"]["Tokens today"]]
    assert tokens == ["8,500 / 10,000", "0 / no limit"]
    spending = listing["alice"]["Spent this month"], listing["bob"]["Spent this month"]
    expected_alice = Decimal("0.0024") + (Decimal("1") if today.day > 1 else 0)
    assert spending == (f"${expected_alice:,.4f} / $10.00", "$0.0000 / $10.00")


def test_the_80_percent_filter_lists_only_users_near_a_limit(admin_client, mini, settings):
    settings.QUOTA_TOKENS_PER_DAY = None
    settings.QUOTA_USD_PER_MONTH = Decimal("10")
    today = local_today()
    tokens_85 = User.objects.create_user("tokens85", tokens_per_day=10_000)
    usage(tokens_85, mini, tokens=8_500)
    dollars_90 = User.objects.create_user("dollars90")  # the site's default $10
    usage(dollars_90, mini, cost=Decimal("9"))
    exactly_80 = User.objects.create_user("exactly80", usd_per_month=Decimal("5.00"))
    usage(exactly_80, mini, cost=Decimal("4"))
    half = User.objects.create_user("half", tokens_per_day=10_000)
    usage(half, mini, tokens=5_000, cost=Decimal("1"))
    no_token_limit = User.objects.create_user("notokenlimit")  # many tokens, no token limit, little spent
    usage(no_token_limit, mini, tokens=5_000_000, cost=Decimal("0.50"))
    yesterday = User.objects.create_user("yesterday", tokens_per_day=10_000)
    usage(yesterday, mini, tokens=9_999, day=today - timedelta(days=1))
    last_month = User.objects.create_user("lastmonth")
    usage(last_month, mini, cost=Decimal("9.99"), day=month_start(today) - timedelta(days=1))
    own_higher_limit = User.objects.create_user("ownlimit", usd_per_month=Decimal("100"))  # their own beats the site's
    usage(own_higher_limit, mini, cost=Decimal("9"))

    near = user_rows(admin_client, "?quota=over80")

    assert sorted(near) == ["dollars90", "exactly80", "tokens85"]
    assert near["tokens85"]["Tokens today"] == "8,500 / 10,000"
    assert near["dollars90"]["Spent this month"] == "$9.0000 / $10.00"
    page = parse_html(admin_client.get(USERS).content)
    assert page.find("a", text="over 80% of a limit").attrs["href"] == "?quota=over80"


def test_without_any_limit_nobody_is_near_one(admin_client, alice, mini, settings):
    settings.QUOTA_TOKENS_PER_DAY = None
    settings.QUOTA_USD_PER_MONTH = None
    usage(alice, mini, tokens=5_000_000, cost=Decimal("500"))

    assert user_rows(admin_client, "?quota=over80") == {}
    assert user_rows(admin_client)["alice"]["Tokens today"] == "5,000,000 / no limit"


def test_a_site_wide_token_limit_counts_for_users_without_their_own(admin_client, alice, bob, mini, settings):
    settings.QUOTA_TOKENS_PER_DAY = 1_000
    settings.QUOTA_USD_PER_MONTH = None
    usage(alice, mini, tokens=900)
    bob.tokens_per_day = 10_000
    bob.save()
    usage(bob, mini, tokens=900)

    assert sorted(user_rows(admin_client, "?quota=over80")) == ["alice"]


def test_someone_who_is_not_staff_cannot_open_the_console(alice, catalog):
    client = Client()
    client.force_login(alice)

    for url in (USERS, f"{USERS}{alice.pk}/change/", AUDIT):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
