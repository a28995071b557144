"""Limits hold across server processes: two daphne processes share rate-limit counters (Redis) and budgets (PostgreSQL).

The processes here run with small rate limits of their own (site_env takes
overrides), per hour so that no window ends during a test.
"""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import httpx
import pytest
from django.core.management import call_command

from accounts.billing.prompt_bound import prompt_tokens_bound
from accounts.models import DailyUsage, Reservation
from conversations.models import Message
from tests.conftest import PASSWORD
from tests.fake_upstream import Reply
from tests.live.conftest import HTTP_TIMEOUT, login, reply_watch, same_session, site_env, stream_url
from tests.servers import site_server

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN_LIMIT = 3
MESSAGE_LIMIT = 4


@pytest.fixture(scope="module")
def limited_sites(django_db_setup, fake_upstream, tmp_path_factory):
    """Base URLs of two daphne processes with the same small limits, sharing PostgreSQL and Redis."""
    env = site_env(
        tmp_path_factory.mktemp("limits-var"),
        OPENAI_BASE_URL=fake_upstream.base_url,
        RATELIMIT_LOGIN=f"{LOGIN_LIMIT}/h",
        RATELIMIT_MESSAGES=f"{MESSAGE_LIMIT}/h",
    )
    with site_server(env) as site_a, site_server(env) as site_b:
        yield site_a, site_b


def login_attempt(base_url: str, password: str) -> httpx.Response:
    """Alice's log-in through the real form, from a browser of its own."""
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT, trust_env=False) as client:
        form = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        return client.post(
            "/accounts/login/", data={"username": "alice", "password": password, "csrfmiddlewaretoken": token}
        )


def test_login_attempts_through_both_processes_count_against_one_limit(limited_sites, alice):
    site_a, site_b = limited_sites
    sites = cycle([site_a, site_b])

    attempts = [login_attempt(next(sites), "not-the-password") for _ in range(LOGIN_LIMIT)]
    refused = [login_attempt(site, PASSWORD) for site in (site_a, site_b)]

    assert [attempt.status_code for attempt in attempts] == [200] * LOGIN_LIMIT
    for response in refused:
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "3600"
        assert "Too many log-in attempts from your network. Wait an hour and try again." in response.text
        assert "sessionid" not in response.cookies


def test_a_burst_of_login_attempts_on_both_processes_lets_only_the_limit_through(limited_sites, alice):
    site_a, site_b = limited_sites

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda site: login_attempt(site, "not-the-password").status_code, [site_a, site_b] * 4)
        )

    assert sorted(statuses) == [200] * LOGIN_LIMIT + [429] * (8 - LOGIN_LIMIT)


@pytest.fixture
def alice_on_both(limited_sites, alice, catalog):
    """Alice logged in on process A, and the same session on process B."""
    site_a, site_b = limited_sites
    client_a = login(site_a, alice)
    client_b = same_session(client_a, site_b)
    yield client_a, client_b
    client_a.close()
    client_b.close()


def replies_finished(client: httpx.Client) -> None:
    for reply in Message.objects.filter(role=Message.Role.ASSISTANT, status__in=Message.LIVE_STATUSES):
        reply_watch(client, stream_url(reply.conversation_id, reply.pk))


def test_messages_through_both_processes_count_against_one_limit(alice_on_both, upstream):
    client_a, client_b = alice_on_both
    clients = cycle([client_a, client_b])

    sent = [next(clients).post("/c/new/messages/", data={"text": f"message {i}"}) for i in range(MESSAGE_LIMIT)]
    refused = [client.post("/c/new/messages/", data={"text": "one too many"}) for client in (client_a, client_b)]

    assert [response.status_code for response in sent] == [302] * MESSAGE_LIMIT
    for response in refused:
        assert response.status_code == 429
        assert "Too many messages. Wait an hour and try again." in response.text
    assert not Message.objects.filter(content="one too many").exists()
    replies_finished(client_a)
    assert len(upstream.requests) == MESSAGE_LIMIT


def test_parallel_messages_through_both_processes_cannot_spend_past_the_budget(alice_on_both, alice, upstream):
    """The budget has room for one reply's worst case (its prompt plus max_tokens), not two."""
    site_clients = alice_on_both
    max_tokens = 100
    worst_case = prompt_tokens_bound([{"role": "user", "content": "Hi"}]) + max_tokens
    budget = worst_case + 50
    call_command("setquota", "alice", "--tokens-per-day", str(budget), "--max-tokens", str(max_tokens))
    # Slow, and using all it may: whether the others are checked while it runs or after, none fits.
    upstream.script(Reply(text="The one reply.", first_delay=0.5, prompt_tokens=7, completion_tokens=max_tokens))

    def send(client: httpx.Client) -> int:
        with same_session(client, str(client.base_url)) as own:
            return own.post("/c/new/messages/", data={"text": "Hi"}).status_code

    with ThreadPoolExecutor(max_workers=MESSAGE_LIMIT) as pool:
        statuses = list(pool.map(send, [*site_clients] * (MESSAGE_LIMIT // 2)))

    assert statuses == [302] * MESSAGE_LIMIT  # each chat shows its answer: a reply, or why there is none
    upstream.wait_for_requests(1)
    time.sleep(0.5)  # room for a second request to arrive, if one was let through
    assert len(upstream.requests) == 1
    assert upstream.requests[0].json["max_tokens"] <= max_tokens
    replies = Message.objects.filter(role=Message.Role.ASSISTANT)
    refused = replies.filter(error_code="tokens_per_day")
    assert refused.count() == MESSAGE_LIMIT - 1
    assert all(
        re.match(rf"\d+ of your {budget} tokens for today are left[,;] ", text)
        for text in refused.values_list("error_text", flat=True)
    )
    answered = replies.exclude(error_code="tokens_per_day").get()
    _, status = reply_watch(site_clients[1], stream_url(answered.conversation_id, answered.pk))
    assert status == "complete"
    spent = sum(DailyUsage.objects.filter(user=alice).values_list("tokens", flat=True))
    assert spent == 7 + max_tokens <= budget
    assert not Reservation.objects.filter(user=alice).exists()
