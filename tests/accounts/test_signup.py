import pytest
from django.test import Client

from accounts.models import User
from tests.conftest import PASSWORD
from tests.dom import parse_html

URL = "/accounts/signup/"


def signup_data(username: str = "carol", password: str = PASSWORD, confirmation: str | None = None) -> dict:
    return {
        "username": username,
        "password1": password,
        "password2": password if confirmation is None else confirmation,
    }


def test_the_signup_page_asks_for_a_username_and_the_password_twice(db):
    response = Client().get(URL)

    assert response.status_code == 200
    form = parse_html(response.content).find("form", action=URL)
    assert form.labelled("Username").attrs["name"] == "username"
    assert form.labelled("Password").attrs["type"] == "password"
    assert form.labelled("Password confirmation").attrs["type"] == "password"
    assert form.find("button", text="Create account")


def test_it_creates_the_account_and_logs_in(catalog):
    client = Client()

    response = client.post(URL, signup_data(), follow=True)

    assert response.redirect_chain == [("/", 302)]
    carol = User.objects.get(username="carol")
    assert carol.check_password(PASSWORD)
    assert not carol.is_staff
    assert response.context["user"] == carol
    assert parse_html(response.content).labelled("Message").tag == "textarea"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (signup_data(username="alice"), "username", "A user with that username already exists."),
        (signup_data(username="ALICE"), "username", "A user with that username already exists."),
        (signup_data(username="bad name!"), "username", "Enter a valid username."),
        (signup_data(password="password"), "password2", "This password is too common."),
        (signup_data(password="81726354"), "password2", "This password is entirely numeric."),
        (signup_data(password="x7!k"), "password2", "This password is too short."),
        (signup_data(confirmation="something-else-1"), "password2", "The two password fields didn’t match."),
    ],
    ids=["taken", "taken-other-case", "invalid-username", "common", "numeric", "short", "mismatch"],
)
def test_it_refuses_bad_input_with_the_reason_and_creates_nobody(alice, data, field, reason):
    client = Client()

    response = client.post(URL, data)

    assert response.status_code == 400
    form = parse_html(response.content).find("form", action=URL)
    errors = [alert.text for alert in form.find_all(role="alert")]
    assert any(error.startswith(reason) for error in errors), errors
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]
    assert "_auth_user_id" not in client.session


def test_a_refused_signup_keeps_the_username_typed(db):
    response = Client().post(URL, signup_data(password="password"))

    assert parse_html(response.content).labelled("Username").attrs["value"] == "carol"


def test_the_login_page_links_to_signup(db):
    page = parse_html(Client().get("/accounts/login/").content)

    assert page.find("a", text="Sign up").attrs["href"] == URL


def test_when_signup_is_closed_the_page_is_not_found_and_not_linked(db, settings):
    settings.SIGNUP_ENABLED = False
    client = Client()

    assert client.get(URL).status_code == 404
    assert client.post(URL, signup_data()).status_code == 404
    assert not User.objects.filter(username="carol").exists()
    login_page = parse_html(client.get("/accounts/login/").content)
    assert not login_page.find_all("a", text="Sign up")
    assert not login_page.find_all("a", href=URL)


def test_a_logged_in_user_is_sent_to_the_chat(alice_client):
    response = alice_client.post(URL, signup_data())

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert not User.objects.filter(username="carol").exists()


def test_it_requires_the_csrf_token(db):
    client = Client(enforce_csrf_checks=True)
    form = parse_html(client.get(URL).content).find("form", action=URL)

    forged = client.post(URL, signup_data())
    assert forged.status_code == 403
    assert not User.objects.filter(username="carol").exists()

    genuine = client.post(URL, form.form_data() | signup_data())
    assert genuine.status_code == 302
    assert User.objects.filter(username="carol").exists()


@pytest.mark.parametrize("method", ["put", "delete"])
def test_other_methods_are_not_allowed(db, method):
    response = getattr(Client(), method)(URL)

    assert response.status_code == 405
