from importlib import import_module

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.backends import UserBackend
from accounts.models import User
from tests.conftest import PASSWORD
from tests.dom import parse_html

URL = "/accounts/login/"


def login_form(client: Client, url: str = URL):
    response = client.get(url)
    assert response.status_code == 200
    return parse_html(response.content).find("form", action=URL)


def test_the_login_page_has_username_and_password_fields(db):
    form = login_form(Client())

    assert form.labelled("Username").attrs["name"] == "username"
    password = form.labelled("Password")
    assert (password.attrs["name"], password.attrs["type"]) == ("password", "password")
    assert "csrfmiddlewaretoken" in form.form_data()
    assert form.find("button", text="Log in").attrs["type"] == "submit"


def test_it_logs_in_and_opens_the_chat(alice, catalog):
    client = Client()

    response = client.post(URL, {"username": "alice", "password": PASSWORD}, follow=True)

    assert response.redirect_chain == [("/", 302)]
    assert response.context["user"].username == "alice"
    assert parse_html(response.content).labelled("Message").tag == "textarea"


def test_it_returns_to_the_page_that_asked_for_login(alice, catalog):
    client = Client()
    form = login_form(client, "/accounts/login/?next=/c/42/")

    response = client.post(URL, form.form_data() | {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/c/42/"


def test_it_never_redirects_off_site_after_login(alice):
    client = Client()

    response = client.post(f"{URL}?next=https://evil.example/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_a_wrong_password_shows_an_error_and_logs_nobody_in(alice):
    client = Client()

    response = client.post(URL, {"username": "alice", "password": "not-the-password"})

    assert response.status_code == 200
    page = parse_html(response.content)
    assert page.find(role="alert", class_="error").text.startswith("Please enter a correct username and password.")
    assert page.labelled("Username").attrs["value"] == "alice"  # kept, to fix the password only
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302


def test_an_unknown_user_gets_the_same_error(db):
    response = Client().post(URL, {"username": "mallory", "password": PASSWORD})

    assert response.status_code == 200
    assert (
        parse_html(response.content)
        .find(role="alert", class_="error")
        .text.startswith("Please enter a correct username and password.")
    )


def test_a_logged_in_user_is_sent_to_the_chat(alice_client):
    response = alice_client.get(URL)

    assert response.status_code == 302
    assert response["Location"] == "/"


def test_it_requires_the_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    form = login_form(client)

    forged = client.post(URL, {"username": "alice", "password": PASSWORD})
    assert forged.status_code == 403
    assert "_auth_user_id" not in client.session

    genuine = client.post(URL, form.form_data() | {"username": "alice", "password": PASSWORD})
    assert genuine.status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


@pytest.mark.parametrize("method", ["patch", "delete"])
def test_other_methods_are_not_allowed(db, method):
    assert getattr(Client(), method)(URL).status_code == 405


def test_logout_ends_the_session(alice_client):
    page = parse_html(alice_client.get("/").content)
    form = page.find("button", text="Log out").parent

    response = alice_client.post(form.attrs["action"], form.form_data())

    assert response.status_code == 302
    assert response["Location"] == URL
    assert alice_client.get("/").status_code == 302


def test_sessions_are_read_from_the_shared_cache_and_end_there_at_logout(alice, alice_client, settings):
    """With Redis, a request reads its session from it, not from the database (cached_db). What ends a session
    still ends it everywhere: a logout, and a user made inactive (the user is not cached with the session)."""
    if settings.SESSION_ENGINE != "django.contrib.sessions.backends.cached_db":
        pytest.skip("sessions are cached only in the cache every process shares: needs Redis (make test starts one)")
    other_tab = Client()  # the same session, as another tab (or process) sends it
    other_tab.cookies.load({settings.SESSION_COOKIE_NAME: alice_client.cookies[settings.SESSION_COOKIE_NAME].value})

    with CaptureQueriesContext(connection) as queries:
        assert alice_client.get("/").status_code == 200
    assert not [query for query in queries.captured_queries if "django_session" in query["sql"]]

    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert other_tab.get("/").status_code == 302
    alice.is_active = True
    alice.save(update_fields=["is_active"])
    assert other_tab.get("/").status_code == 200

    form = parse_html(alice_client.get("/").content).find("button", text="Log out").parent
    alice_client.post(form.attrs["action"], form.form_data())

    assert other_tab.get("/").status_code == 302


def test_a_session_logged_in_through_djangos_model_backend_stays_logged_in(alice, catalog, settings):
    """Sessions keep the path of the backend that logged them in: those from before UserBackend are still good."""
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(alice.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = alice.get_session_auth_hash()
    session.save()
    client = Client()
    client.cookies.load({settings.SESSION_COOKIE_NAME: session.session_key})

    assert client.get("/").status_code == 200


def test_the_session_user_is_the_users_row_whole_and_only_while_active(alice, bob):
    """UserBackend reads the user by a written-out statement: every field as the ORM reads it."""
    found = UserBackend().get_user(alice.pk)

    assert found == alice
    assert {field.name: getattr(found, field.attname) for field in User._meta.concrete_fields} == {
        field.name: getattr(User.objects.get(pk=alice.pk), field.attname) for field in User._meta.concrete_fields
    }
    assert UserBackend().get_user(bob.pk + alice.pk + 1000) is None
    bob.is_active = False
    bob.save(update_fields=["is_active"])
    assert UserBackend().get_user(bob.pk) is None
