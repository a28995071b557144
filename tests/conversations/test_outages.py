"""PostgreSQL or Redis out of reach: what a browser, an API client and a load balancer see.

The outages are real: Redis settings point at a port nobody listens on, and
the test database stops accepting connections while its open ones are
terminated, as a PostgreSQL restart does to them.
"""

import asyncio
import json
import socket
from collections.abc import Iterator

import httpx
import openai
import psycopg
import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.db import connection, connections
from django.test import AsyncClient
from psycopg import sql

from accounts.services import api_key_create
from chatsite.asgi import application
from chatsite.settings import redis_caches
from conversations.db import worker_threads
from conversations.models import Message
from tests.conftest import HTMX

pytestmark = pytest.mark.django_db(transaction=True)

DATABASE_DOWN = "The site cannot reach its database right now. Try again in a few seconds."
REDIS_DOWN = "The site cannot reach its cache (Redis) right now. Try again in a few seconds."
# How long a request waits for a pooled connection here before it is answered 503 (DB_POOL_TIMEOUT).
POOL_TIMEOUT = 0.5


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cache_down(settings, closed_port):
    """The cache and rate limits on a Redis nobody answers; the channels layer stays as the test has it."""
    settings.CACHES = redis_caches(f"redis://127.0.0.1:{closed_port}/0")


def database_accepts_connections(allowed: bool) -> None:
    """Open or close the test database to new connections; on close, cut the open ones too, as a restart does."""
    db = connection.settings_dict
    name = sql.Identifier(db["NAME"])
    # As the test's own user, from the maintenance database: the test database is the one going away.
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname="postgres", autocommit=True
    ) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(name, sql.Literal(allowed)))
        if not allowed:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db["NAME"]])


@pytest.fixture(autouse=True)
def _an_upstream_is_configured(settings):
    """Without one, /healthz checks the embedded local model too (see test_local_model_health.py)."""
    settings.UPSTREAM_IS_LOCAL = False


@pytest.fixture
def database_down(db) -> Iterator[None]:
    """The test database refuses connections and its open ones are cut, until the test ends."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (make test starts one)")
    pool = connection.settings_dict["OPTIONS"]["pool"]
    timeout, pool["timeout"] = pool["timeout"], POOL_TIMEOUT
    connection.close_pool()  # the next connection opens a pool with the short timeout
    database_accepts_connections(False)
    try:
        yield
    finally:
        database_accepts_connections(True)
        # Hand back what the test's threads hold, cut by the outage, before the tables are emptied.
        connections.close_all()
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
        worker_threads().connections_close()
        pool["timeout"] = timeout
        connection.close_pool()


@pytest.fixture
def secret(alice, catalog) -> str:
    return api_key_create(user=alice, name="app")[1]


def sdk(secret: str) -> openai.AsyncOpenAI:
    """The official SDK on the site's ASGI application, in this process."""
    transport = httpx.ASGITransport(app=application)
    return openai.AsyncOpenAI(
        base_url="http://127.0.0.1/v1",
        api_key=secret,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1"),
    )


async def within_seconds(seconds: float, attempt):
    """attempt()'s result once it stops failing with a 503, trying for at most `seconds`.

    The pool reconnects in the background: the first request after PostgreSQL
    comes back may still find it waiting to try again.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            return await attempt()
        except openai.InternalServerError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def chat_completion(secret: str):
    async with sdk(secret) as client:
        return await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])


async def test_an_api_client_gets_openais_503_when_the_database_is_down(secret, upstream, database_down):
    with pytest.raises(openai.InternalServerError) as failed:
        await chat_completion(secret)

    assert failed.value.status_code == 503
    assert failed.value.code == "service_unavailable"
    assert failed.value.body == {
        "message": DATABASE_DOWN,
        "type": "server_error",
        "param": None,
        "code": "service_unavailable",
    }
    assert failed.value.response.headers["Retry-After"] == "5"
    assert upstream.requests == []


async def test_an_api_client_gets_openais_503_when_redis_is_down(secret, upstream, cache_down):
    with pytest.raises(openai.InternalServerError) as failed:
        await chat_completion(secret)

    assert failed.value.status_code == 503
    assert failed.value.body["message"] == REDIS_DOWN
    assert failed.value.code == "service_unavailable"
    assert failed.value.response.headers["Retry-After"] == "5"
    assert upstream.requests == []


async def test_the_api_works_again_once_the_database_is_back(secret, upstream, database_down):
    with pytest.raises(openai.InternalServerError):
        await chat_completion(secret)

    await sync_to_async(database_accepts_connections)(True)
    completion = await within_seconds(5, lambda: chat_completion(secret))

    assert completion.choices[0].message.content == "Hello from the fake upstream."
    assert len(upstream.requests) == 1


async def test_the_chat_shows_why_a_message_was_not_sent_when_redis_is_down(alice_async, upstream, cache_down):
    response = await alice_async.post("/c/new/messages/", {"text": "Hello?"}, headers=HTMX)

    # The rate limit is counted in Redis: it fails closed with the outage, never lets the message through.
    assert response.status_code == 503
    assert response["HX-Retarget"] == "#composer-errors"
    assert response["HX-Reswap"] == "innerHTML"
    assert response["Retry-After"] == "5"
    assert REDIS_DOWN in response.content.decode()
    assert await Message.objects.acount() == 0
    assert upstream.requests == []


async def test_the_chat_shows_why_a_message_was_not_sent_when_the_database_is_down(
    alice_async, upstream, database_down
):
    response = await alice_async.post("/c/new/messages/", {"text": "Hello?"}, headers=HTMX)

    assert response.status_code == 503
    assert response["HX-Retarget"] == "#composer-errors"
    assert DATABASE_DOWN in response.content.decode()
    assert upstream.requests == []


async def test_without_javascript_the_page_says_the_database_is_down(alice_async, database_down):
    response = await alice_async.get("/")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert f'<p role="alert">{DATABASE_DOWN}</p>' in response.content.decode()


async def test_a_reply_stream_is_refused_with_503_when_the_database_is_down(alice_async, database_down):
    response = await alice_async.get("/c/1/messages/2/stream/")

    assert response.status_code == 503
    assert DATABASE_DOWN in response.content.decode()


async def test_healthz_names_the_database_when_it_is_down(database_down, settings):
    settings.REDIS_URL = ""

    response = await AsyncClient().get("/healthz")

    assert response.status_code == 503
    assert json.loads(response.content) == {"status": "error", "database": "error: OperationalError"}


async def test_healthz_names_redis_when_the_channels_layer_cannot_reach_it(db, settings, closed_port):
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set; `make test` sets it")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port}/0"]},
        }
    }

    response = await AsyncClient().get("/healthz")

    assert response.status_code == 503
    assert json.loads(response.content) == {"status": "error", "database": "ok", "redis": "error: ConnectionError"}


async def test_healthz_is_ok_again_once_the_database_is_back(database_down, settings):
    settings.REDIS_URL = ""
    assert (await AsyncClient().get("/healthz")).status_code == 503

    await sync_to_async(database_accepts_connections)(True)
    deadline = asyncio.get_running_loop().time() + 5  # the pool reconnects in the background
    while (response := await AsyncClient().get("/healthz")).status_code == 503:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)

    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok", "database": "ok"}
