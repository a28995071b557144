"""Rate limits on every entry point (messages per user, log-in and sign-up per address), and whose address counts.

Counters live in the test Redis, emptied before every test. django-ratelimit
counts in fixed windows, so most tests use per-hour rates: a window ending in
the middle of a test would reset its count.
"""

import asyncio
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client
from django_ratelimit.core import _get_window

from accounts.models import User
from chatsite.settings import env_rate
from conversations.models import Message
from tests.conftest import HTMX, PASSWORD, watch_reply
from tests.dom import parse_html

LOGIN = "/accounts/login/"
SIGNUP = "/accounts/signup/"
START = "/c/new/messages/"
PROXY = "127.0.0.1"  # in TRUSTED_PROXIES by default, and the test client's own address


def fresh_window(key_value: str, seconds: int) -> None:
    """Wait for the next window if this one ends within a few seconds, so the test's count is not reset midway."""
    left = _get_window(key_value, seconds) + 1 - time.time()
    if left < 5:
        time.sleep(left)


def wrong_login(client: Client, **extra):
    return client.post(LOGIN, {"username": "alice", "password": "not-the-password"}, **extra)


def slowed_down(response, text: str, retry_after: str) -> None:
    """The 429 page: its reason, when to try again, and a way back."""
    assert response.status_code == 429, response.status_code
    assert response["Retry-After"] == retry_after
    page = parse_html(response.content)
    assert page.find("h1").text == "Slow down"
    assert page.find("p", role="alert").text == text
    assert page.find("a", text="Back to the chat").attrs["href"] == "/"


# -- Messages, per user ---------------------------------------------------------------------------


async def replies_finished(client: AsyncClient, username: str = "alice") -> None:
    """Read every reply of the user's to its end, so no generation is left running when the test ends."""
    async for reply in Message.objects.filter(role=Message.Role.ASSISTANT, user__username=username):
        await watch_reply(client, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")


@pytest.fixture
def bob_async(bob) -> AsyncClient:
    client = AsyncClient()
    client.force_login(bob)
    return client


@pytest.mark.django_db(transaction=True)
async def test_a_message_past_the_limit_is_refused_with_429_and_not_sent(alice_async, upstream, settings):
    settings.RATELIMIT_MESSAGES = "2/h"
    for text in ("one", "two"):
        assert (await alice_async.post(START, {"text": text})).status_code == 302
    conversation_id = (await Message.objects.filter(content="two").aget()).conversation_id

    refused = await alice_async.post(f"/c/{conversation_id}/messages/", {"text": "three"})
    refused_new_chat = await alice_async.post(START, {"text": "four"})

    for response in (refused, refused_new_chat):
        slowed_down(response, "Too many messages. Wait an hour and try again.", "3600")
    assert not await Message.objects.filter(content__in=["three", "four"]).aexists()
    assert await Message.objects.acount() == 4  # two messages and their replies
    await replies_finished(alice_async)
    assert len(upstream.requests) == 2


@pytest.mark.django_db(transaction=True)
async def test_with_htmx_the_refusal_goes_to_the_composers_error_slot(alice_async, alice, upstream, settings):
    settings.RATELIMIT_MESSAGES = "1/m"
    await asyncio.to_thread(fresh_window, str(alice.pk), 60)
    assert (await alice_async.post(START, {"text": "one"}, headers=HTMX)).status_code == 200

    response = await alice_async.post(START, {"text": "two"}, headers=HTMX)

    assert response.status_code == 429
    assert response["Retry-After"] == "60"
    assert response["HX-Retarget"] == "#composer-errors"
    assert response["HX-Reswap"] == "innerHTML"
    assert b"<html" not in response.content and b"<textarea" not in response.content
    fragment = parse_html(response.content)
    assert [alert.text for alert in fragment.find_all(role="alert")] == [
        "Too many messages. Wait a minute and try again."
    ]
    assert not await Message.objects.filter(content="two").aexists()
    await replies_finished(alice_async)


@pytest.mark.django_db(transaction=True)
async def test_one_users_limit_leaves_other_users_alone(alice_async, bob_async, upstream, settings):
    settings.RATELIMIT_MESSAGES = "1/h"
    assert (await alice_async.post(START, {"text": "alice one"})).status_code == 302
    assert (await alice_async.post(START, {"text": "alice two"})).status_code == 429

    response = await bob_async.post(START, {"text": "bob one"})

    assert response.status_code == 302
    assert await Message.objects.filter(content="bob one", user__username="bob").aexists()
    await replies_finished(alice_async)
    await replies_finished(bob_async, "bob")


@pytest.mark.django_db(transaction=True)
async def test_off_turns_the_message_limit_off(alice_async, upstream, settings):
    settings.RATELIMIT_MESSAGES = "off"

    statuses = [(await alice_async.post(START, {"text": f"message {i}"})).status_code for i in range(4)]

    assert statuses == [302] * 4
    await replies_finished(alice_async)
    assert len(upstream.requests) == 4


# -- Log-in, per address --------------------------------------------------------------------------


def test_the_eleventh_login_attempt_in_a_minute_is_refused(alice, settings):
    assert settings.RATELIMIT_LOGIN == "10/m"  # the site's default
    fresh_window(PROXY, 60)
    client = Client()

    attempts = [wrong_login(client).status_code for _ in range(10)]
    eleventh = client.post(LOGIN, {"username": "alice", "password": PASSWORD})

    assert attempts == [200] * 10  # each told the password is wrong
    slowed_down(eleventh, "Too many log-in attempts from your network. Wait a minute and try again.", "60")
    assert "_auth_user_id" not in client.session  # even the right password is refused


def test_only_posted_login_attempts_count(alice, settings):
    settings.RATELIMIT_LOGIN = "2/h"
    client = Client()

    pages = [client.get(LOGIN).status_code for _ in range(5)]
    login = client.post(LOGIN, {"username": "alice", "password": PASSWORD})

    assert pages == [200] * 5
    assert login.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_the_login_limit_is_per_address(alice, settings):
    settings.RATELIMIT_LOGIN = "2/h"
    limited = Client(REMOTE_ADDR="198.51.100.7")
    for _ in range(2):
        wrong_login(limited)
    assert wrong_login(limited).status_code == 429

    response = Client(REMOTE_ADDR="198.51.100.8").post(LOGIN, {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302


def test_the_limit_page_says_how_long_to_wait(alice, settings):
    settings.RATELIMIT_LOGIN = "1/d"
    client = Client()
    wrong_login(client)

    slowed_down(wrong_login(client), "Too many log-in attempts from your network. Wait a day and try again.", "86400")


def test_off_turns_the_login_limit_off(alice, settings):
    settings.RATELIMIT_LOGIN = "off"
    client = Client()

    assert [wrong_login(client).status_code for _ in range(12)] == [200] * 12
    assert client.post(LOGIN, {"username": "alice", "password": PASSWORD}).status_code == 302


# -- Sign-up, per address -------------------------------------------------------------------------


def signup(username: str, **extra):
    return Client(**extra).post(SIGNUP, {"username": username, "password1": PASSWORD, "password2": PASSWORD})


def test_a_signup_past_the_limit_is_refused_and_creates_nobody(db, settings):
    settings.RATELIMIT_SIGNUP = "2/h"
    assert signup("carol").status_code == 302
    assert signup("dave").status_code == 302

    response = signup("erin")

    slowed_down(response, "Too many sign-ups from your network. Wait an hour and try again.", "3600")
    assert sorted(User.objects.values_list("username", flat=True)) == ["carol", "dave"]
    assert signup("frank", REMOTE_ADDR="198.51.100.20").status_code == 302  # another network still can


def test_refused_signups_count_too(db, settings):
    settings.RATELIMIT_SIGNUP = "2/h"
    client = Client()
    for _ in range(2):
        assert client.post(SIGNUP, {"username": "carol", "password1": "short", "password2": "short"}).status_code == 400

    assert signup("carol").status_code == 429
    assert not User.objects.exists()


def test_the_signup_page_itself_is_not_limited(db, settings):
    settings.RATELIMIT_SIGNUP = "1/h"
    client = Client()

    assert [client.get(SIGNUP).status_code for _ in range(3)] == [200] * 3
    assert signup("carol").status_code == 302


def test_off_turns_the_signup_limit_off(db, settings):
    settings.RATELIMIT_SIGNUP = "off"

    assert [signup(f"user{i}").status_code for i in range(12)] == [302] * 12


# -- The client's address behind a reverse proxy --------------------------------------------------


@pytest.fixture
def behind_proxy(settings, alice):
    """The site behind nginx, which sets X-Real-IP; two log-in attempts per address."""
    settings.TRUSTED_PROXY_HEADER = "X-Real-IP"
    settings.RATELIMIT_LOGIN = "2/h"


def test_behind_the_proxy_each_client_address_has_its_own_budget(behind_proxy):
    proxy = Client()  # REMOTE_ADDR 127.0.0.1: the proxy
    for _ in range(2):
        assert wrong_login(proxy, headers={"X-Real-IP": "198.51.100.1"}).status_code == 200

    refused = wrong_login(proxy, headers={"X-Real-IP": "198.51.100.1"})
    other_client = wrong_login(proxy, headers={"X-Real-IP": "198.51.100.2"})

    assert refused.status_code == 429
    assert other_client.status_code == 200


def test_a_trusted_proxys_list_header_counts_its_last_entry(settings, alice):
    """X-Forwarded-For: earlier entries were written by the client; the last is the address the proxy saw."""
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    settings.RATELIMIT_LOGIN = "2/h"
    proxy = Client()
    for forged in ("203.0.113.50", "203.0.113.51"):
        wrong_login(proxy, headers={"X-Forwarded-For": f"{forged}, 198.51.100.1"})

    assert wrong_login(proxy, headers={"X-Forwarded-For": "203.0.113.52, 198.51.100.1"}).status_code == 429
    assert wrong_login(proxy, headers={"X-Forwarded-For": "198.51.100.1, 198.51.100.2"}).status_code == 200


def test_a_client_that_is_not_the_proxy_cannot_dodge_the_limit_with_headers(behind_proxy):
    direct = Client(REMOTE_ADDR="203.0.113.9")
    wrong_login(direct, headers={"X-Real-IP": "198.51.100.1"})
    wrong_login(direct, headers={"X-Forwarded-For": "198.51.100.2"})

    forged_real_ip = wrong_login(direct, headers={"X-Real-IP": "198.51.100.3"})
    forged_forwarded = wrong_login(direct, headers={"X-Forwarded-For": "198.51.100.4", "X-Real-IP": "198.51.100.5"})

    assert forged_real_ip.status_code == 429
    assert forged_forwarded.status_code == 429
    # The addresses it claimed were never charged: real clients behind the proxy still log in.
    proxy = Client()
    assert wrong_login(proxy, headers={"X-Real-IP": "198.51.100.3"}).status_code == 200


def test_another_trusted_proxy_can_be_configured(behind_proxy, settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    proxy = Client(REMOTE_ADDR="10.0.0.5")
    for _ in range(2):
        wrong_login(proxy, headers={"X-Real-IP": "198.51.100.1"})

    assert wrong_login(proxy, headers={"X-Real-IP": "198.51.100.2"}).status_code == 200
    # 127.0.0.1 is no longer trusted: its header is ignored and it is counted as itself.
    localhost = Client()
    for address in ("198.51.100.7", "198.51.100.8"):
        wrong_login(localhost, headers={"X-Real-IP": address})
    assert wrong_login(localhost, headers={"X-Real-IP": "198.51.100.9"}).status_code == 429


def test_without_a_proxy_header_a_forged_forwarded_for_changes_nothing(settings, alice):
    settings.TRUSTED_PROXY_HEADER = ""
    settings.RATELIMIT_LOGIN = "2/h"
    client = Client()
    for forged in ("198.51.100.1", "198.51.100.2"):
        assert wrong_login(client, headers={"X-Forwarded-For": forged, "X-Real-IP": forged}).status_code == 200

    response = wrong_login(client, headers={"X-Forwarded-For": "198.51.100.3", "X-Real-IP": "198.51.100.3"})

    assert response.status_code == 429


@pytest.mark.parametrize(
    "garbage",
    ["not-an-address", "", "   ", "999.1.1.1", "198.51.100.1, junk", "198.51.100.1/24", "1" * 300, "fe80::1%eth0"],
    ids=["words", "empty", "spaces", "bad-octet", "list-ending-in-junk", "network", "very-long", "scoped-ipv6"],
)
def test_a_garbage_proxy_header_is_counted_as_the_proxy_and_never_breaks_the_page(behind_proxy, garbage):
    proxy = Client()

    responses = [wrong_login(proxy, headers={"X-Real-IP": garbage}) for _ in range(3)]

    assert [response.status_code for response in responses[:2]] == [200, 200]
    if garbage == "fe80::1%eth0":  # a real (scoped) address: counted as itself
        assert responses[2].status_code == 429
        assert wrong_login(proxy).status_code == 200
    else:  # no address in it: counted as the proxy's own
        assert responses[2].status_code == 429
        assert wrong_login(proxy).status_code == 429
        assert wrong_login(proxy, headers={"X-Real-IP": "198.51.100.1"}).status_code == 200


def test_the_message_limit_follows_the_user_not_the_address(alice, catalog, settings):
    """Messages are counted per account: a new address does not reset them, nor does a shared one merge them."""
    settings.RATELIMIT_MESSAGES = "1/h"
    settings.RATELIMIT_LOGIN = "off"
    settings.TRUSTED_PROXY_HEADER = "X-Real-IP"
    client = Client()
    client.force_login(alice)
    # An invalid message still counts against the limit: no reply is started, so a sync client is enough.
    assert client.post(START, {"text": "   "}, headers={"X-Real-IP": "198.51.100.1"}).status_code == 400

    response = client.post(START, {"text": "   "}, headers={"X-Real-IP": "198.51.100.2"})

    assert response.status_code == 429


# -- Configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["30", "30/", "30/w", "x/m", "-1/m", "30/0m", "30/0s"])
def test_a_rate_that_cannot_work_is_refused_at_start_up(monkeypatch, raw):
    monkeypatch.setenv("RATELIMIT_TEST", raw)

    with pytest.raises(ImproperlyConfigured, match="RATELIMIT_TEST"):
        env_rate("RATELIMIT_TEST", "30/m")


@pytest.mark.parametrize("raw", ["30/m", "5/10m", "100/h", "1000/d", "off"])
def test_a_good_rate_is_accepted(monkeypatch, raw):
    monkeypatch.setenv("RATELIMIT_TEST", raw)

    assert env_rate("RATELIMIT_TEST", "30/m") == raw
