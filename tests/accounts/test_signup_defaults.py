"""Who signs up themselves gets the site's sign-up limits, never unlimited use; sign-up can be kept to e-mail
domains."""

from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from accounts.models import AuditEntry, User
from chatsite.settings import env_optional_int, env_optional_usd, env_signup_limit
from conversations.models import Message
from tests.conftest import PASSWORD
from tests.dom import parse_html

URL = "/accounts/signup/"


def sign_up(client: Client, username: str = "carol", **extra):
    return client.post(URL, {"username": username, "password1": PASSWORD, "password2": PASSWORD, **extra})


def test_a_stranger_who_signs_up_gets_the_sites_sign_up_limits(db, settings):
    assert settings.QUOTA_TOKENS_PER_DAY is None  # the site itself sets no quota

    assert sign_up(Client()).status_code == 302

    limits = User.objects.get(username="carol").limits()
    assert (limits.tokens_per_day, limits.usd_per_month, limits.realtime_minutes_per_day) == (
        50_000,
        Decimal("1.00"),
        10,
    )
    assert (limits.tokens_per_hour, limits.max_tokens_per_request) == (None, None)
    audited = AuditEntry.objects.filter(user__username="carol").values_list("actor_label", "subject", "new_value")
    assert sorted(audited) == [
        ("sign-up", "realtime_minutes_per_day", "10"),
        ("sign-up", "tokens_per_day", "50000"),
        ("sign-up", "usd_per_month", "1.00"),
    ]


def test_users_made_by_staff_get_no_sign_up_limits(db):
    dave = User.objects.create_user("dave", password=PASSWORD)

    assert dave.limits().tokens_per_day is None


def test_a_limit_set_off_leaves_the_sites_quota_in_force(db, settings):
    settings.SIGNUP_LIMITS = {**settings.SIGNUP_LIMITS, "tokens_per_day": None}
    settings.QUOTA_TOKENS_PER_DAY = 7_000

    sign_up(Client())

    carol = User.objects.get(username="carol")
    assert carol.tokens_per_day is None
    assert carol.limits().tokens_per_day == 7_000


def test_the_new_users_first_message_past_the_sign_up_limit_is_refused(catalog, upstream, settings):
    settings.SIGNUP_LIMITS = {**settings.SIGNUP_LIMITS, "tokens_per_day": 100}
    client = Client()
    sign_up(client)

    response = client.post("/c/new/messages/", {"text": "Write me a long story"}, follow=True)

    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    assert reply.error_code == "tokens_per_day"
    assert "100 of your 100 tokens for today are left" in response.content.decode()
    assert upstream.requests == []


@pytest.mark.parametrize(
    "raw, parse, expected",
    [
        ("", env_optional_int, 50_000),
        ("off", env_optional_int, None),
        ("2000", env_optional_int, 2_000),
        ("2.50", env_optional_usd, Decimal("2.50")),
    ],
)
def test_sign_up_limits_from_the_environment(monkeypatch, raw, parse, expected):
    monkeypatch.setenv("SIGNUP_TEST", raw)

    assert env_signup_limit("SIGNUP_TEST", 50_000, parse) == expected


@pytest.mark.parametrize("raw", ["lots", "-5", "0"])
def test_a_sign_up_limit_that_cannot_work_stops_start_up(monkeypatch, raw):
    monkeypatch.setenv("SIGNUP_TEST", raw)

    with pytest.raises(ImproperlyConfigured, match="SIGNUP_TEST"):
        env_signup_limit("SIGNUP_TEST", 50_000, env_optional_int)


# -- E-mail domains -------------------------------------------------------------------------------


@pytest.fixture
def domains(db, settings):
    settings.SIGNUP_EMAIL_DOMAINS = ["example.org", "example.com"]


def test_without_a_domain_list_no_address_is_asked_for(db):
    form = parse_html(Client().get(URL).content).find("form", action=URL)

    assert "email" not in form.form_data()


def test_with_a_domain_list_the_page_asks_for_an_address(domains):
    form = parse_html(Client().get(URL).content).find("form", action=URL)

    assert form.labelled("Email address").attrs["name"] == "email"


@pytest.mark.parametrize("email", ["carol@gmail.com", "carol@example.org.evil.com", "carol@sub.example.org", ""])
def test_an_address_at_another_domain_is_refused_with_a_clear_error(domains, email):
    response = sign_up(Client(), email=email)

    assert response.status_code == 400
    errors = [alert.text for alert in parse_html(response.content).find_all("p", role="alert")]
    if email:
        assert errors == ["Sign-up is open to e-mail addresses ending in @example.org or @example.com only."]
    else:
        assert errors == ["This field is required."]
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.parametrize("email", ["carol@example.org", "Carol@EXAMPLE.COM"])
def test_an_address_at_an_allowed_domain_signs_up(domains, email):
    assert sign_up(Client(), email=email).status_code == 302

    assert User.objects.get(username="carol").email.lower() == email.lower()
