"""Clients that go away at any moment leave no budget held: /v1 calls and chat messages cut at many points.

Each abandoned request is sent whole on a raw socket, which is then closed a
set time later: before the view runs, while the call is reserved, while the
upstream thinks (its first_delay), while it streams, and after it finished.
Then, once the server has had (bounded) time to clean up: no reservation is
left, no reply is left pending or streaming, every call on the ledger reached
the upstream (and is there once), and the user can spend all the budget left.
"""

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from django.core.management import call_command
from django.db.models import Sum

from accounts.billing.prompt_bound import prompt_tokens_bound
from accounts.models import DailyUsage, Reservation, UsageRecord
from accounts.services import api_key_create
from conversations.models import Message
from tests.fake_upstream import Reply
from tests.live.conftest import HTTP_TIMEOUT, login, site_env
from tests.servers import site_server

pytestmark = pytest.mark.django_db(transaction=True)

# Seconds between sending a request and hanging up.
CUT_AFTER = (0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.3)
CALLS_PER_KIND = 60
# The upstream thinks for 30 ms, then streams 20 pieces 10 ms apart: the cuts fall in every phase.
SLOW_REPLY = Reply(chunks=["word "] * 20, first_delay=0.03, delay=0.01, usage="exact")
CLEAN_UP_WITHIN = 20.0


@pytest.fixture(scope="module")
def unlimited_site(django_db_setup, fake_upstream, tmp_path_factory):
    """The site without rate limits, so that every abandoned request gets as far as its cut lets it."""
    env = site_env(
        tmp_path_factory.mktemp("disconnects-var"),
        OPENAI_BASE_URL=fake_upstream.base_url,
        RATELIMIT_API="off",
        RATELIMIT_API_IP="off",
        RATELIMIT_MESSAGES="off",
    )
    with site_server(env) as base_url:
        yield base_url


@pytest.fixture
def slow_upstream(upstream):
    upstream.default = SLOW_REPLY
    return upstream


def prompt(i: int) -> str:
    """The prompt of call i: its length tells the call apart on the ledger, whether its usage is exact or estimated."""
    return f"call {i:03d}: " + "x" * 4 * i


def call_of(record: UsageRecord) -> int:
    """Which call a ledger row bills: estimates count a quarter of the prompt's characters (10 + 4 i);
    exact usage counts its bytes and 10 tokens of framing (see tests/fake_upstream.py)."""
    return record.prompt_tokens - 3 if record.estimated else (record.prompt_tokens - 20) // 4


def index_of(text: str) -> int:
    return int(re.match(r"call (\d+):", text).group(1))


def abandon(base_url: str, path: str, headers: dict[str, str], body: bytes, after: float) -> None:
    """Send a whole request, wait `after` seconds, and hang up without reading the answer."""
    address = urlsplit(base_url)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n{head}Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(request)
        if after:
            time.sleep(after)


def abandon_all(base_url: str, path: str, headers: dict[str, str], bodies: list[bytes]) -> None:
    cuts = [CUT_AFTER[i % len(CUT_AFTER)] for i in range(len(bodies))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda body, after: abandon(base_url, path, headers, body, after), bodies, cuts))


def cleaned_up(user) -> None:
    """Wait (bounded) until nothing is held or left live; fail saying what is left."""
    deadline = time.monotonic() + CLEAN_UP_WITHIN
    while True:
        held = Reservation.objects.filter(user=user).count()
        live = Message.objects.filter(user=user, status__in=Message.LIVE_STATUSES).count()
        if not held and not live:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{held} reservations and {live} live replies left {CLEAN_UP_WITHIN:g} s after")
        time.sleep(0.1)


def reached_upstream(upstream) -> list[int]:
    return [index_of(request.json["messages"][-1]["content"]) for request in upstream.requests]


def tokens_today(user) -> int:
    return DailyUsage.objects.filter(user=user).aggregate(tokens=Sum("tokens"))["tokens"] or 0


def the_rest_of_the_budget_can_be_spent(base_url: str, secret: str, user, upstream) -> None:
    """With the daily limit set to what is spent plus one call's worst case, that call gets all it asked for."""
    messages = [{"role": "user", "content": prompt(999)}]
    limit = tokens_today(user) + prompt_tokens_bound(messages) + 200
    call_command("setquota", user.username, "--tokens-per-day", str(limit))
    upstream.script(Reply(text="y" * 300, usage="exact"))

    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT, trust_env=False) as client:
        answer = client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": messages, "max_tokens": 200},
            headers={"Authorization": f"Bearer {secret}"},
        )

    assert answer.status_code == 200, answer.text
    assert upstream.requests[-1].json["max_tokens"] == 200
    assert answer.json()["usage"]["completion_tokens"] == 200
    assert tokens_today(user) <= limit


@pytest.mark.parametrize("stream", [False, True], ids=["json", "streamed"])
def test_v1_calls_abandoned_at_any_moment_leave_nothing_held(unlimited_site, alice, catalog, slow_upstream, stream):
    _, secret = api_key_create(user=alice, name="app")
    bodies = [
        json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt(i)}], "stream": stream}
        ).encode()
        for i in range(CALLS_PER_KIND)
    ]
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}

    abandon_all(unlimited_site, "/v1/chat/completions", headers, bodies)
    cleaned_up(alice)

    reached = reached_upstream(slow_upstream)
    billed = [call_of(record) for record in UsageRecord.objects.filter(user=alice)]
    assert len(reached) == len(set(reached)), "a call was sent upstream twice"
    assert len(billed) == len(set(billed)), "a call was billed twice"
    assert set(billed) <= set(reached), f"calls {set(billed) - set(reached)} never reached the upstream but were billed"
    the_rest_of_the_budget_can_be_spent(unlimited_site, secret, alice, slow_upstream)


def test_messages_whose_browser_went_away_still_get_their_reply(unlimited_site, alice, catalog, slow_upstream):
    browser = login(unlimited_site, alice)
    cookies = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    headers = {
        "Cookie": cookies,
        "X-CSRFToken": browser.headers["X-CSRFToken"],
        "Content-Type": "application/x-www-form-urlencoded",
    }
    bodies = [urlencode({"text": prompt(i)}).encode() for i in range(CALLS_PER_KIND)]

    abandon_all(unlimited_site, "/c/new/messages/", headers, bodies)
    cleaned_up(alice)

    sent = {
        index_of(text)
        for text in Message.objects.filter(user=alice, role=Message.Role.USER).values_list("content", flat=True)
    }
    replies = Message.objects.filter(user=alice, role=Message.Role.ASSISTANT).select_related("conversation")
    assert replies.count() == len(sent)
    assert {reply.status for reply in replies} == {Message.Status.COMPLETE}
    assert sorted(reached_upstream(slow_upstream)) == sorted(sent)
    records = UsageRecord.objects.filter(user=alice)
    assert records.count() == len(sent)
    assert set(records.values_list("message_id", flat=True)) == {reply.pk for reply in replies}
    _, secret = api_key_create(user=alice, name="app")
    the_rest_of_the_budget_can_be_spent(unlimited_site, secret, alice, slow_upstream)
