"""What a long-running server process holds on to while replies stream and after they are done."""

from pathlib import Path

import pytest
from django.db import connection

from accounts.services import api_key_create
from tests.fake_upstream import Reply
from tests.live.conftest import chat_start, login, reply_watch, stream_url
from tests.servers import site_pid, site_server

pytestmark = pytest.mark.django_db(transaction=True)

APPLICATION_NAME = "live-resources-site"


@pytest.fixture(scope="module")
def counted_site(live_env):
    """A server of its own whose database connections carry a name, so that only they are counted."""
    env = live_env | {"DATABASE_URL": f"{live_env['DATABASE_URL']}?application_name={APPLICATION_NAME}"}
    with site_server(env | {"WORKER_THREADS": "2"}) as base_url:
        yield base_url


def server_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME])
        return cursor.fetchone()[0]


def test_finished_replies_leave_no_database_connections_open(counted_site, alice, catalog, upstream):
    client = login(counted_site, alice)

    for i in range(10):
        conversation_id, reply_id = chat_start(client, f"Question {i}")
        _, status = reply_watch(client, stream_url(conversation_id, reply_id))
        assert status == "complete"

    # PostgreSQL allows 100 connections by default: one left open per reply runs a busy site out of them.
    assert server_connections() <= 2


def test_open_reply_streams_hold_no_database_connection(counted_site, alice, catalog, upstream):
    # Replies that take a while, each watched by its own open stream, as when many tabs are open.
    upstream.default = Reply(chunks=[f"w{i} " for i in range(100)], delay=0.05)
    client = login(counted_site, alice)
    started = [chat_start(client, f"Question {i}") for i in range(12)]
    streams = [client.stream("GET", stream_url(*ids)) for ids in started]
    responses = [stream.__enter__() for stream in streams]
    try:
        for response in responses:
            next(response.iter_lines())  # attached and receiving
        # One per stream would run PostgreSQL (100 by default) out of connections at a hundred open tabs.
        assert server_connections() <= 3
    finally:
        for stream in streams:
            stream.__exit__(None, None, None)


def server_threads(base_url: str) -> int:
    return len(list(Path(f"/proc/{site_pid(base_url)}/task").iterdir()))


def test_open_streams_hold_no_thread(counted_site, alice, catalog, upstream):
    # Slow replies, on both paths: the chat's SSE streams and streamed /v1 calls, all open at once.
    upstream.default = Reply(chunks=[f"w{i} " for i in range(100)], delay=0.05)
    client = login(counted_site, alice)
    _, secret = api_key_create(user=alice, name="app")
    reply_watch(client, stream_url(*chat_start(client, "A first question: the process's threads start")))
    before = server_threads(counted_site)

    web = [client.stream("GET", stream_url(*chat_start(client, f"Question {i}"))) for i in range(15)]
    v1 = [
        client.stream(
            "POST",
            f"{counted_site}/v1/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": f"Call {i}"}]},
        )
        for i in range(15)
    ]
    responses = [stream.__enter__() for stream in web + v1]
    try:
        for response in responses:
            assert response.status_code == 200
            next(response.iter_lines())  # receiving
        # Django's handler keeps a thread per response until it ends: 30 more here, 2,000 at 2,000 streams.
        # What may be new is the two worker threads (WORKER_THREADS) and a few of asyncio's and the SDK's.
        assert server_threads(counted_site) - before <= 6
    finally:
        for stream in web + v1:
            stream.__exit__(None, None, None)
