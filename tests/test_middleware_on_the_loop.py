"""Django's security, session, CSRF and X-Frame-Options middleware, run on the event loop for the site's async
requests (chatsite/loop_middleware.py): a browser gets from them what Django's own give it, and a worker
thread's database connection goes back to the pool after each call it runs (conversations/db.py).

Every request goes through chatsite.asgi's application, as daphne serves it.
"""

import re

import httpx
import pytest
from django.db import connections

from chatsite.asgi import application
from conversations.db import worker_threads
from tests.conftest import PASSWORD, make_conversation
from tests.dom import parse_html

pytestmark = pytest.mark.django_db(transaction=True)

LOGIN = "/accounts/login/"


@pytest.fixture
def chat(alice, catalog):
    return make_conversation(alice, title="Trip plans")


def browser() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://localhost")


def form_token(page: httpx.Response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


async def logged_in(client: httpx.AsyncClient) -> httpx.AsyncClient:
    token = form_token(await client.get(LOGIN))
    response = await client.post(LOGIN, data={"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token})
    assert (response.status_code, response.headers["Location"]) == (302, "/")
    return client


async def title_of(chat) -> str:
    await chat.arefresh_from_db()
    return chat.title


async def test_a_login_is_saved_in_the_session_and_the_next_request_is_logged_in(alice, catalog):
    async with browser() as client:
        await logged_in(client)
        home = await client.get("/")

    assert "sessionid" in client.cookies
    assert home.status_code == 200
    assert parse_html(home.content).labelled("Message").tag == "textarea"


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(alice, chat):
    async with browser() as client:
        await logged_in(client)
        refused = await client.post(f"/c/{chat.pk}/rename/", data={"title": "Lisbon in May"})

    assert refused.status_code == 403
    assert await title_of(chat) == "Trip plans"


async def test_a_post_with_the_token_of_its_page_is_taken(alice, chat):
    async with browser() as client:
        await logged_in(client)
        token = form_token(await client.get(f"/c/{chat.pk}/"))
        taken = await client.post(
            f"/c/{chat.pk}/rename/", data={"title": "Lisbon in May"}, headers={"X-CSRFToken": token}
        )

    assert taken.status_code == 302
    assert await title_of(chat) == "Lisbon in May"


@pytest.mark.parametrize("with_token", [True, False])
async def test_a_form_too_large_to_keep_in_memory_is_checked_like_any_other(alice, chat, settings, with_token):
    """Its body is on disk and its files go there as it is parsed: the check runs off the loop, the same check."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    async with browser() as client:
        await logged_in(client)
        token = form_token(await client.get(f"/c/{chat.pk}/"))
        form = {"title": "Lisbon in May"} | ({"csrfmiddlewaretoken": token} if with_token else {})
        padding = {"padding": ("padding.txt", b"x" * 8192, "text/plain")}
        response = await client.post(f"/c/{chat.pk}/rename/", data=form, files=padding)  # the token only in the form

    assert response.status_code == (302 if with_token else 403)
    assert await title_of(chat) == ("Lisbon in May" if with_token else "Trip plans")


async def test_pages_carry_the_security_headers(db):
    async with browser() as client:
        page = await client.get(LOGIN)

    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"


async def test_a_worker_thread_holds_no_connection_after_the_pages_it_served(alice, chat):
    async with browser() as client:
        await logged_in(client)  # sync views: the ORM on the request's worker thread
        page = await client.get(f"/c/{chat.pk}/")

    def connected() -> bool:
        return any(connection.connection is not None for connection in connections.all(initialized_only=True))

    assert page.status_code == 200
    held = [worker.submit(connected).result() for worker in worker_threads().workers]
    assert held == [False] * len(held)
