import pytest
from django.test import Client

from tests.conftest import HTMX, htmx_csrf_token, make_conversation
from tests.dom import parse_html


@pytest.fixture
def chat(alice, catalog):
    return make_conversation(alice, title="Trip plans")


def url(chat) -> str:
    return f"/c/{chat.pk}/rename/"


def title_of(chat) -> str:
    chat.refresh_from_db()
    return chat.title


def test_it_renames_the_chat(alice_client, chat):
    response = alice_client.post(url(chat), {"title": "Lisbon in May"}, follow=True)

    assert response.redirect_chain == [(f"/c/{chat.pk}/", 302)]
    page = parse_html(response.content)
    assert page.labelled("Chat name").attrs["value"] == "Lisbon in May"
    assert page.find("nav", aria_label="Chats").find("a", aria_current="page").text == "Lisbon in May"
    assert title_of(chat) == "Lisbon in May"


def test_it_tidies_the_spaces_in_a_name(alice_client, chat):
    alice_client.post(url(chat), {"title": "  Lisbon \t in\nMay  "})

    assert title_of(chat) == "Lisbon in May"


def test_htmx_gets_the_title_and_the_renamed_chat_in_the_list(alice_client, chat):
    response = alice_client.post(url(chat), {"title": "Lisbon in May"}, headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [
        ("div", "chat-title"),
        ("nav", "conversation-list"),
    ]
    assert fragment.labelled("Chat name").attrs["value"] == "Lisbon in May"
    chat_list = top_level[1]
    assert chat_list.attrs["hx-swap-oob"] == "true"
    assert chat_list.find("a", aria_current="page").text == "Lisbon in May"
    assert title_of(chat) == "Lisbon in May"


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("   ", "A chat needs a name."),
        ("x" * 201, "Ensure this value has at most 200 characters (it has 201)."),
    ],
    ids=["blank", "too-long"],
)
def test_it_refuses_a_bad_name_and_keeps_the_old_one(alice_client, chat, title, reason):
    response = alice_client.post(url(chat), {"title": title})

    assert response.status_code == 400
    page = parse_html(response.content)
    assert page.find("form", class_="rename").find(role="alert").text == reason
    assert page.find("nav", aria_label="Chats").find("a", aria_current="page").text == "Trip plans"
    assert page.find("title").text == "Trip plans · Chat"
    assert title_of(chat) == "Trip plans"


def test_htmx_gets_the_reason_a_name_was_refused(alice_client, chat):
    response = alice_client.post(url(chat), {"title": ""}, headers=HTMX)

    assert response.status_code == 400  # the page's htmx config swaps 4xx answers in
    fragment = parse_html(response.content)
    assert fragment.find(id="chat-title").find(role="alert").text == "A chat needs a name."
    assert not fragment.find_all("nav")  # nothing changed in the list
    assert title_of(chat) == "Trip plans"


def test_it_rejects_other_users_conversation(alice_client, bob):
    bobs = make_conversation(bob, title="Bob's chat")

    response = alice_client.post(url(bobs), {"title": "Mine now"})

    assert response.status_code == 404
    assert title_of(bobs) == "Bob's chat"


def test_anonymous_is_sent_to_login(chat):
    response = Client().post(url(chat), {"title": "Hijacked"})

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url(chat)}"
    assert title_of(chat) == "Trip plans"


def test_get_is_not_allowed(alice_client, chat):
    assert alice_client.get(url(chat), {"title": "Lisbon"}).status_code == 405
    assert title_of(chat) == "Trip plans"


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
def test_it_requires_the_csrf_token(alice_csrf_client, chat, headers):
    alice_csrf_client.get(f"/c/{chat.pk}/")  # the CSRF cookie, without the token

    response = alice_csrf_client.post(url(chat), {"title": "Forged"}, headers=headers)

    assert response.status_code == 403
    assert title_of(chat) == "Trip plans"


def test_htmx_renames_with_the_token_the_page_hands_it(alice_csrf_client, chat):
    token = htmx_csrf_token(alice_csrf_client.get(f"/c/{chat.pk}/"))

    response = alice_csrf_client.post(url(chat), {"title": "Lisbon"}, headers=HTMX | {"X-CSRFToken": token})

    assert response.status_code == 200
    assert title_of(chat) == "Lisbon"


def test_without_javascript_the_rename_form_works(alice_csrf_client, chat):
    page = parse_html(alice_csrf_client.get(f"/c/{chat.pk}/").content)
    form = page.find("form", class_="rename")

    response = alice_csrf_client.post(form.attrs["action"], form.form_data() | {"title": "Lisbon"})

    assert response.status_code == 302
    assert title_of(chat) == "Lisbon"


LIST = {"HX-Target": "conversation-list"}


def test_renamed_in_the_chat_list_htmx_gets_the_list_back(alice_client, chat):
    response = alice_client.post(url(chat), {"title": "Lisbon in May"}, headers=HTMX | LIST)

    assert response.status_code == 200
    fragment = parse_html(response.content)
    chat_list = fragment.find("nav", aria_label="Chats")
    assert "hx-swap-oob" not in chat_list.attrs  # it is the target itself
    assert [link.text for link in chat_list.find_all("a")] == ["Lisbon in May"]
    assert not fragment.find_all(id="chat-title")
    assert title_of(chat) == "Lisbon in May"


def test_a_bad_name_given_in_the_chat_list_is_refused_there(alice_client, chat):
    response = alice_client.post(url(chat), {"title": "  "}, headers=HTMX | LIST)

    assert response.status_code == 400
    item = parse_html(response.content).find("li", id=f"chat-item-{chat.pk}")
    assert item.find("a").text == "Trip plans"
    assert item.find(role="alert").text == "A chat needs a name."
    assert title_of(chat) == "Trip plans"
