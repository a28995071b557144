"""Shared fixtures: the fake upstream, the seeded catalog, users, and helpers to drive a chat turn.

In-process tests run the site's views in the test's own event loop with
Django's AsyncClient, on PostgreSQL; the generation task lives in that loop
too. They need `transaction=True` because sync_to_async runs queries on
another thread and connection. Tests of several processes start real daphne
servers that share PostgreSQL and Redis (see tests/servers.py).
"""

import inspect
import itertools
import json
import re

import pytest
from asgiref.sync import SyncToAsync, async_to_sync
from django.conf import settings as django_settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.cache import cache
from django.db import connections
from django.test import AsyncClient, Client

from accounts.models import User
from conversations.db import db_step, worker_threads
from conversations.models import ChatModel, Conversation, Message
from conversations.replies.runner import runner_of_this_loop
from conversations.services.catalog import catalog_seed
from conversations.upstream import upstream_offer
from tests.fake_upstream import FakeUpstream

PASSWORD = "a-long-test-password-1"


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's default algorithm with fewer rounds: a live server with the default hasher still checks these."""

    iterations = 1_000


django_settings.PASSWORD_HASHERS = ["tests.conftest.FastPBKDF2PasswordHasher"]
# Tests that go through chatsite.asgi would make this process a "server" that sweeps on an idle
# timer, racing the flush of the test database; the tests of the sweep run it themselves.
django_settings.SWEEP_INTERVAL = 0
# A title call after each chat's first reply would take a turn of every test's scripted upstream;
# the tests of titles turn them on (tests/conversations/test_titles.py).
django_settings.CHAT_TITLES = False


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup, django_db_blocker):
    """Close the connections sync_to_async and db_step opened on their threads, so the test database can be dropped."""
    yield
    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()
        worker_threads().connections_close()


def pytest_collection_modifyitems(items):
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.fixturenames.append("_replies_ended_with_the_test")


@pytest.fixture
async def _replies_ended_with_the_test():
    """Replies an async test left running in its event loop end with it, stopped and settled as at a shutdown,
    before the tables are emptied: a settle racing that flush could deadlock with it. (Every async test gets it;
    see pytest_collection_modifyitems.)"""
    yield
    runner = runner_of_this_loop()
    if runner is not None:
        await runner.shutdown()
        await db_step(lambda: None)  # and the database step its timer may still have under way is done


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters start from zero in every test (the cache is the throwaway Redis)."""
    cache.clear()


@pytest.fixture(scope="session")
def fake_upstream():
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def upstream(fake_upstream, settings):
    """The fake upstream, emptied for this test, with the site pointed at it."""
    fake_upstream.reset()
    settings.OPENAI_BASE_URL = fake_upstream.base_url
    settings.OPENAI_API_KEY = "sk-upstream-secret"
    settings.UPSTREAM_IS_LOCAL = False
    settings.UPSTREAM_RETRY_BASE_DELAY = 0.01
    settings.DEFAULT_MODEL = "gpt-4o-mini"
    settings.DEFAULT_MODEL_EXPLICIT = False
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return fake_upstream


@pytest.fixture
def catalog(db, upstream):
    catalog_seed()


@pytest.fixture
def listing(upstream, catalog, settings):
    """The fake upstream with every catalog chat model enabled, its list read again on every look."""
    settings.UPSTREAM_MODELS_INTERVAL = 0.001
    ChatModel.objects.update(enabled=True)
    yield upstream
    # Leave the whole list known, as the tests after this one expect it.
    upstream.reset()
    async_to_sync(upstream_offer)()


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob", password=PASSWORD)


@pytest.fixture
def root(db) -> User:
    """A superuser, for the admin."""
    return User.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def admin_client(root, catalog) -> Client:
    client = Client()
    client.force_login(root)
    return client


@pytest.fixture
def mini(catalog) -> ChatModel:
    return ChatModel.objects.get(model_id="gpt-4o-mini")


@pytest.fixture
def alice_client(alice, catalog) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def alice_async(alice, catalog) -> AsyncClient:
    client = AsyncClient()
    client.force_login(alice)
    return client


HTMX = {"HX-Request": "true"}


def parse_sse(raw: bytes) -> list[tuple[str, str, str | None]]:
    """(event, data, id) for each event in an SSE body; comments and the retry preamble are skipped."""
    events = []
    for block in raw.decode().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if "event" in fields:
            events.append((fields["event"], fields.get("data", ""), fields.get("id")))
    return events


async def watch_reply(client: AsyncClient, stream_url: str, **headers) -> tuple[str, str]:
    """Read a reply's SSE stream to its end: (the text it delivered, the final status).

    A reply that finished before the watcher attached delivers no text, only
    its end: the page then shows the stored reply.
    """
    response = await client.get(stream_url, headers=headers)
    assert response.status_code == 200, response
    assert response["Content-Type"] == "text/event-stream"
    return sse_text_and_status(b"".join([chunk async for chunk in response.streaming_content]))


def sse_text_and_status(body: bytes) -> tuple[str, str | None]:
    """The text a reply's SSE body delivered, and the status its end gave (None: it did not end)."""
    text, status = "", None
    for event, data, _ in parse_sse(body):
        if event == "delta":
            text += json.loads(data)
        elif event == "done":
            status = json.loads(data)["status"]
    return text, status


def make_conversation(user: User, **fields) -> Conversation:
    """A chat of the user's, written straight to the database; on the default model unless given."""
    fields.setdefault("model", ChatModel.objects.default())
    return Conversation.objects.create(user=user, **fields)


def make_message(conversation: Conversation, role: str = "user", content: str = "", **fields) -> Message:
    """A message in the chat, written straight to the database (a finished one unless a status is given).

    The chat stays one branch in the order of the messages' times, as a chat from before versions was migrated.
    """
    message = Message.objects.create(
        conversation=conversation, user=conversation.user, role=role, content=content, **fields
    )
    in_order = list(conversation.messages.order_by("created_at", "id").values_list("pk", flat=True))
    for parent_id, pk in itertools.pairwise([None, *in_order]):
        Message.objects.filter(pk=pk).update(parent_id=parent_id)
    Conversation.objects.filter(pk=conversation.pk).update(leaf_id=in_order[-1])
    conversation.leaf_id = in_order[-1]
    return message


@pytest.fixture
def alice_csrf_client(alice, catalog) -> Client:
    """Alice logged in on a client that checks CSRF tokens as the site checks a browser's."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def htmx_csrf_token(page_response) -> str:
    """The CSRF token a page hands htmx in `<body hx-headers>`; its cookie is now in the client."""
    body = re.search(rb"<body hx-headers='([^']*)'", page_response.content)
    assert body, "the page has no hx-headers on <body>"
    return json.loads(body.group(1))["X-CSRFToken"]
