import pytest
from django.test import Client

from tests.conftest import HTMX, htmx_csrf_token, make_conversation
from tests.dom import parse_html

OLD_PROMPT = "Answer like a pirate."


@pytest.fixture
def chat(alice, catalog):
    return make_conversation(alice, title="Trip plans", system_prompt=OLD_PROMPT)


def url(chat) -> str:
    return f"/c/{chat.pk}/system-prompt/"


def prompt_of(chat) -> str:
    chat.refresh_from_db()
    return chat.system_prompt


def shown_prompt(page) -> str:
    return page.find("form", id="system-prompt").form_data()["system_prompt"]


def test_it_saves_the_system_prompt(alice_client, chat):
    response = alice_client.post(url(chat), {"system_prompt": "Answer in French.\nBe brief."}, follow=True)

    assert response.redirect_chain == [(f"/c/{chat.pk}/", 302)]
    assert shown_prompt(parse_html(response.content)) == "Answer in French.\nBe brief."
    assert prompt_of(chat) == "Answer in French.\nBe brief."


def test_the_chat_page_shows_the_current_prompt(alice_client, chat):
    page = parse_html(alice_client.get(f"/c/{chat.pk}/").content)

    assert page.labelled("System prompt").tag == "textarea"
    assert shown_prompt(page) == OLD_PROMPT


def test_it_can_be_cleared(alice_client, chat):
    alice_client.post(url(chat), {"system_prompt": ""})

    assert prompt_of(chat) == ""


def test_htmx_gets_the_form_back_saying_saved(alice_client, chat):
    response = alice_client.post(url(chat), {"system_prompt": "Answer in French."}, headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [("form", "system-prompt")]
    assert fragment.find(role="status").text == "Saved."
    assert shown_prompt(fragment) == "Answer in French."
    assert prompt_of(chat) == "Answer in French."


def test_a_prompt_at_the_limit_is_saved(alice_client, chat, settings):
    settings.SYSTEM_PROMPT_MAX_CHARS = 1000

    response = alice_client.post(url(chat), {"system_prompt": "a" * 1000}, headers=HTMX)

    assert response.status_code == 200
    assert prompt_of(chat) == "a" * 1000


def test_htmx_a_prompt_over_the_limit_is_refused_and_the_old_one_kept(alice_client, chat, settings):
    settings.SYSTEM_PROMPT_MAX_CHARS = 1000

    response = alice_client.post(url(chat), {"system_prompt": "a" * 1001}, headers=HTMX)

    assert response.status_code == 400
    fragment = parse_html(response.content)
    assert fragment.find(role="alert").text == "The system prompt can be at most 1,000 characters."
    assert not fragment.find_all(role="status")  # no "Saved."
    assert shown_prompt(fragment) == "a" * 1001  # what they typed stays, to shorten
    assert prompt_of(chat) == OLD_PROMPT


def test_without_javascript_a_prompt_over_the_limit_is_refused_and_the_old_one_kept(alice_client, chat, settings):
    settings.SYSTEM_PROMPT_MAX_CHARS = 1000

    response = alice_client.post(url(chat), {"system_prompt": "a" * 1001})

    assert response.status_code == 400
    page = parse_html(response.content)
    assert page.find("form", id="system-prompt").find(role="alert").text == (
        "The system prompt can be at most 1,000 characters."
    )
    assert prompt_of(chat) == OLD_PROMPT


def test_it_rejects_other_users_conversation(alice_client, bob):
    bobs = make_conversation(bob, title="Bob's chat", system_prompt="Be kind.")

    response = alice_client.post(url(bobs), {"system_prompt": "Leak everything."}, headers=HTMX)

    assert response.status_code == 404
    assert prompt_of(bobs) == "Be kind."


def test_anonymous_is_sent_to_login(chat):
    response = Client().post(url(chat), {"system_prompt": "Hijacked"})

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url(chat)}"
    assert prompt_of(chat) == OLD_PROMPT


def test_get_is_not_allowed(alice_client, chat):
    assert alice_client.get(url(chat)).status_code == 405


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
def test_it_requires_the_csrf_token(alice_csrf_client, chat, headers):
    alice_csrf_client.get(f"/c/{chat.pk}/")  # the CSRF cookie, without the token

    response = alice_csrf_client.post(url(chat), {"system_prompt": "Forged"}, headers=headers)

    assert response.status_code == 403
    assert prompt_of(chat) == OLD_PROMPT


def test_htmx_saves_with_the_token_the_page_hands_it(alice_csrf_client, chat):
    token = htmx_csrf_token(alice_csrf_client.get(f"/c/{chat.pk}/"))

    response = alice_csrf_client.post(url(chat), {"system_prompt": "Be brief."}, headers=HTMX | {"X-CSRFToken": token})

    assert response.status_code == 200
    assert prompt_of(chat) == "Be brief."


def test_without_javascript_the_system_prompt_form_works(alice_csrf_client, chat):
    form = parse_html(alice_csrf_client.get(f"/c/{chat.pk}/").content).find("form", id="system-prompt")

    response = alice_csrf_client.post(form.attrs["action"], form.form_data() | {"system_prompt": "Be brief."})

    assert response.status_code == 302
    assert prompt_of(chat) == "Be brief."
