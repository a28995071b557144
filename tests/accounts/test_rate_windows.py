"""Several windows per rate-limit setting ("10/m,50/h,200/d", as the Flask seed sets them), at every entry point.

Counters live in the test Redis, emptied before every test. django-ratelimit
counts in fixed windows whose edges differ per counted key; tests that cross
a window move the clock with time_machine instead of waiting.
"""

import json
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from django_ratelimit.core import _get_window
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.ratelimits import Window
from accounts.services import api_key_create
from chatsite.settings import env_rate
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

ADDRESS = "127.0.0.1"  # the test client's
WRONG = {"username": "alice", "password": "not-the-password"}


def wrong_login(client: Client, path: str = "/accounts/login/"):
    return client.post(path, WRONG)


def v1_post(client: Client, path: str, body: dict, secret: str):
    return client.post(
        path, json.dumps(body), content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )


@pytest.fixture
def entry_points(alice, bob, catalog):
    """Each limited entry point: its setting, and one request to it that the limit counts (nothing sent upstream)."""
    alice_client = Client()
    alice_client.force_login(alice)
    alice_key, bob_key = api_key_create(user=alice, name="app")[1], api_key_create(user=bob, name="app")[1]
    unknown_model = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hi"}]}
    keys = iter([alice_key, bob_key] * 3)  # the per-address limit counts every key from the address
    return {
        "login": ("RATELIMIT_LOGIN", lambda: wrong_login(Client())),
        "admin login": ("RATELIMIT_LOGIN", lambda: wrong_login(Client(), "/admin/login/")),
        "sign-up": ("RATELIMIT_SIGNUP", lambda: Client().post("/accounts/signup/", {"username": "carol"})),
        "messages": ("RATELIMIT_MESSAGES", lambda: alice_client.post("/c/new/messages/", {"text": "   "})),
        "api per user": ("RATELIMIT_API", lambda: v1_post(Client(), "/v1/chat/completions", unknown_model, alice_key)),
        "api per address": (
            "RATELIMIT_API_IP",
            lambda: v1_post(Client(), "/v1/chat/completions", unknown_model, next(keys)),
        ),
        "realtime": (
            "RATELIMIT_API_IP",
            lambda: v1_post(Client(), "/v1/realtime/client_secrets", {"session": {"model": "nope"}}, next(keys)),
        ),
    }


@pytest.mark.parametrize(
    "entry_point", ["login", "admin login", "sign-up", "messages", "api per user", "api per address", "realtime"]
)
@pytest.mark.parametrize("rate, refused_by", [("2/h,5/d", 3600), ("5/h,2/d", 86400)], ids=["hour", "day"])
def test_every_window_of_the_setting_is_enforced_with_its_own_retry_after(
    entry_points, upstream, settings, entry_point, rate, refused_by
):
    setting, request = entry_points[entry_point]
    setattr(settings, setting, rate)

    answers = [request() for _ in range(3)]

    assert [a.status_code for a in answers[:2]] == [answers[0].status_code] * 2
    assert answers[0].status_code != 429
    assert answers[2].status_code == 429
    assert answers[2]["Retry-After"] == str(refused_by)
    assert upstream.requests == []


def test_the_page_says_which_window_refused(alice, settings):
    settings.RATELIMIT_LOGIN = "5/h,1/d"
    wrong_login(Client())

    refused = wrong_login(Client())

    assert refused.status_code == 429
    assert b"Too many log-in attempts from your network. Wait a day and try again." in refused.content


def test_the_api_error_names_the_window_that_refused(alice, catalog, upstream, settings):
    settings.RATELIMIT_API = "10/m,1/h"
    secret = api_key_create(user=alice, name="app")[1]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    assert v1_post(Client(), "/v1/chat/completions", body, secret).status_code == 200

    refused = v1_post(Client(), "/v1/chat/completions", body, secret)

    assert refused.status_code == 429
    assert refused["Retry-After"] == "3600"
    assert refused.json()["error"]["message"] == "Rate limit reached for this site (1/h). Try again shortly."
    assert len(upstream.requests) == 1


def first_second_of_next_window(value: str, seconds: int) -> datetime:
    return datetime.fromtimestamp(_get_window(value, seconds) + 1, UTC)


def test_a_burst_refused_by_the_minute_window_costs_nothing_of_the_hours(alice, settings):
    settings.RATELIMIT_LOGIN = "3/m,5/h"
    with time_machine.travel(first_second_of_next_window(ADDRESS, 3600), tick=False) as clock:
        first_minute = [wrong_login(Client()).status_code for _ in range(6)]
        clock.shift(61)
        next_minute = [wrong_login(Client()) for _ in range(3)]

    assert first_minute == [200, 200, 200, 429, 429, 429]
    assert [a.status_code for a in next_minute] == [200, 200, 429]  # 3 + 2: the hour's five
    assert next_minute[2]["Retry-After"] == "3600"


# -- /admin/login/ -------------------------------------------------------------------------------


def test_25_wrong_admin_passwords_in_a_minute_are_stopped_and_the_right_one_is_refused_too(root, settings):
    assert settings.RATELIMIT_LOGIN == "10/m"  # the site's default
    fresh = first_second_of_next_window(ADDRESS, 60)
    with time_machine.travel(fresh, tick=False):
        client = Client()
        attempts = [client.post("/admin/login/", {"username": "root", "password": f"guess-{i}"}) for i in range(25)]
        right = client.post("/admin/login/", {"username": "root", "password": PASSWORD})

    assert [a.status_code for a in attempts] == [200] * 10 + [429] * 15
    assert attempts[10]["Retry-After"] == "60"
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_admin_and_the_site_log_in_share_one_count(alice, settings):
    settings.RATELIMIT_LOGIN = "2/h"
    wrong_login(Client())
    wrong_login(Client(), "/admin/login/")

    assert wrong_login(Client()).status_code == 429
    assert wrong_login(Client(), "/admin/login/").status_code == 429


def test_the_admin_log_in_page_itself_still_works(root, settings):
    settings.RATELIMIT_LOGIN = "1/h"
    client = Client()

    pages = [client.get("/admin/login/").status_code for _ in range(3)]
    login = client.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})

    assert pages == [200] * 3
    assert login.status_code == 302 and login["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


# -- The rule, for every sequence of requests ----------------------------------------------------

rates = st.lists(
    st.tuples(st.integers(1, 4), st.sampled_from(["s", "2s", "5s", "m", "2m"])), min_size=1, max_size=3
).map(lambda windows: ",".join(f"{count}/{period}" for count, period in windows))
gaps = st.lists(st.sampled_from([0, 0, 0, 1, 2, 3, 7, 31, 61]), min_size=1, max_size=25)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=rates, start=st.integers(1_800_000_000, 1_800_086_400), gaps=gaps)
def test_no_sequence_of_requests_passes_more_than_any_window_allows(alice, rate, start, gaps):
    cache.clear()
    windows = [Window(part) for part in rate.split(",")]
    passed: dict[tuple[str, int], int] = {}
    with override_settings(RATELIMIT_LOGIN=rate), time_machine.travel(start, tick=False) as clock:
        for gap in gaps:
            clock.shift(gap)
            answer = wrong_login(Client())
            if answer.status_code == 429:
                assert int(answer["Retry-After"]) in {window.seconds for window in windows}
                continue
            assert answer.status_code == 200
            for window in windows:
                current = (window.rate, _get_window(ADDRESS, window.seconds))
                passed[current] = passed.get(current, 0) + 1

    for (window_rate, _), count in passed.items():
        assert count <= int(window_rate.partition("/")[0]), (rate, gaps, passed)


# -- Configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["10/m,50/h,200/d", "10/m, 50/h", "5/10s,100/d"])
def test_several_windows_are_accepted_at_start_up(monkeypatch, raw):
    monkeypatch.setenv("RATELIMIT_TEST", raw)

    assert env_rate("RATELIMIT_TEST", "30/m") == raw


@pytest.mark.parametrize("raw", ["10/m,", ",10/m", "10/m,,50/h", "10/m,50", "off,10/m", "10/m;50/h", "10/m,50/w"])
def test_a_list_with_a_window_that_cannot_work_is_refused_at_start_up(monkeypatch, raw):
    monkeypatch.setenv("RATELIMIT_TEST", raw)

    with pytest.raises(ImproperlyConfigured, match="RATELIMIT_TEST"):
        env_rate("RATELIMIT_TEST", "30/m")
