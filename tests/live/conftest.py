"""The site as real daphne processes on the pytest-django test database, sharing PostgreSQL and Redis.

Tests that use these servers must be `django_db(transaction=True)`: the rows a
test writes (users, the catalog) are then committed, so the servers see them,
and the tables are emptied after the test. The fake upstream is the session's
`fake_upstream`; `upstream` (through `catalog`) empties its script per test.
"""

import json
import os
import re
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from django.conf import settings
from django.db import connection

from accounts.models import User
from conversations.models import Message
from tests.conftest import PASSWORD
from tests.servers import site_server

SECRET_KEY = "live-tests-only-0f3c9a7e5b2d4c6e8a1b3d5f7a9c2e4b6d8f0a1c3e5"
# Long enough for any reply a test scripts; a test that hangs fails instead of stalling the run.
HTTP_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


def site_env(var_dir, **overrides: str) -> dict[str, str]:
    """Environment for a daphne process on the test database (call after it exists) and the test Redis."""
    redis_url = os.environ.get("REDIS_URL", "").strip()
    if not redis_url:
        pytest.skip("REDIS_URL is not set: live servers share Redis for streaming (make test starts one)")
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "chatsite.postgresql":
        pytest.skip("DATABASE_URL is not PostgreSQL: live servers share the test database (make test starts one)")
    user, password = quote(db["USER"], safe=""), quote(db["PASSWORD"], safe="")
    return {
        "DATABASE_URL": f"postgres://{user}:{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_url,
        "OPENAI_API_KEY": "sk-upstream-secret",
        "DEFAULT_MODEL": "gpt-4o-mini",
        "SECRET_KEY": SECRET_KEY,
        "VAR_DIR": str(var_dir),
        "UPSTREAM_RETRY_BASE_DELAY": "0.01",
        "STREAM_FLUSH_INTERVAL": "0.2",
        # No sweep on an idle server's timer: it would race the test database's flush between tests.
        # The tests of the sweep turn it on (or run the command).
        "SWEEP_INTERVAL": "0",
        # No title call after a chat's first reply: it would take a turn of the tests' scripted upstream.
        "CHAT_TITLES": "false",
        # Every test logs in through the form from 127.0.0.1, more often than the per-address limit
        # allows; counters in the shared Redis would also carry over between tests. Its own tests cover it.
        "RATELIMIT_LOGIN": "off",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        # The browser tests set this in the test process (see test_browser_chat.py); the servers
        # must keep Django's check that no ORM call runs on the event loop.
        "DJANGO_ALLOW_ASYNC_UNSAFE": "",
        **overrides,
    }


@pytest.fixture(autouse=True)
def _servers_done_writing_before_the_flush(request):
    """After each live test, wait (a few seconds at most) until the servers have settled the replies and calls
    the test left running and no other connection is inside a query or a transaction: the flush that empties
    the tables between tests could deadlock with a server's last writes and fail the next test's set-up."""
    yield
    if request.node.get_closest_marker("django_db") is None or connection.vendor != "postgresql":
        return
    busy = (
        "SELECT (SELECT count(*) FROM conversations_message WHERE status IN ('pending', 'streaming')"
        "    AND updated_at > now() - interval '10 seconds')"
        " + (SELECT count(*) FROM accounts_reservation)"
        " + (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        "    AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction'))"
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(busy)
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def live_env(django_db_setup, fake_upstream, tmp_path_factory) -> dict[str, str]:
    return site_env(tmp_path_factory.mktemp("live-var"), OPENAI_BASE_URL=fake_upstream.base_url)


@pytest.fixture(scope="session")
def live_site(live_env) -> Iterator[str]:
    """Base URL of the site under daphne, talking to the fake upstream."""
    with site_server(live_env) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def two_sites(live_site, live_env) -> Iterator[tuple[str, str]]:
    """Base URLs of two daphne processes sharing PostgreSQL and Redis."""
    with site_server(live_env) as other:
        yield live_site, other


def login(base_url: str, user: User) -> httpx.Client:
    """An HTTP client logged in through the real login form; it sends the CSRF token as htmx does."""
    client = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT, trust_env=False)
    form = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token, "the login page has no CSRF token"
    response = client.post(
        "/accounts/login/",
        data={"username": user.username, "password": PASSWORD, "csrfmiddlewaretoken": token.group(1)},
    )
    assert response.status_code == 302, f"login failed: HTTP {response.status_code}"
    assert response.headers["location"] == "/"
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    return client


def same_session(client: httpx.Client, base_url: str) -> httpx.Client:
    """Another client on base_url with the session and CSRF token of `client`."""
    return httpx.Client(
        base_url=base_url,
        timeout=HTTP_TIMEOUT,
        trust_env=False,
        cookies=client.cookies,
        headers={"X-CSRFToken": client.headers["X-CSRFToken"]},
    )


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each SSE event as it arrives; comments and the retry preamble are skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in fields:
                yield fields["event"], fields.get("data", ""), fields.get("id")
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def chat_start(client: httpx.Client, text: str, **fields: str) -> tuple[int, int]:
    """Send the first message of a new chat as a form without JavaScript would: (chat id, reply id)."""
    response = client.post("/c/new/messages/", data={"text": text, **fields})
    assert response.status_code == 302, f"HTTP {response.status_code}: {response.text[:500]}"
    conversation_id = int(re.fullmatch(r"/c/(\d+)/", response.headers["location"]).group(1))
    reply = Message.objects.get(conversation_id=conversation_id, role=Message.Role.ASSISTANT)
    return conversation_id, reply.pk


def stream_url(conversation_id: int, reply_id: int) -> str:
    return f"/c/{conversation_id}/messages/{reply_id}/stream/"


def delta_text(data: str) -> str:
    text = json.loads(data)
    assert isinstance(text, str), f"a delta's data is a JSON string, not {data!r}"
    return text


def reply_watch(client: httpx.Client, url: str, **headers: str) -> tuple[list[tuple[float, str, str | None]], str]:
    """Read a reply's SSE stream to its end: each delta as (arrival time, text, id), and the final status."""
    deltas = []
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, f"HTTP {response.status_code}"
        assert response.headers["content-type"].startswith("text/event-stream")
        for event, data, event_id in sse_events(response):
            if event == "delta":
                deltas.append((time.monotonic(), delta_text(data), event_id))
            elif event == "done":
                return deltas, json.loads(data)["status"]
    raise AssertionError(f"the stream ended without a done event after {len(deltas)} deltas")
