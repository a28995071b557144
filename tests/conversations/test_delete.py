import pytest
from django.test import Client

from conversations.models import Conversation, Message
from tests.conftest import HTMX, htmx_csrf_token, make_conversation, make_message
from tests.dom import parse_html


@pytest.fixture
def chat(alice, catalog):
    chat = make_conversation(alice, title="Trip plans")
    make_message(chat, "user", "Where should we go?")
    make_message(chat, "assistant", "Lisbon.", model=chat.model)
    return chat


def url(chat) -> str:
    return f"/c/{chat.pk}/delete/"


def exists(chat) -> bool:
    return Conversation.objects.filter(pk=chat.pk).exists()


def test_it_deletes_the_chat_and_its_messages(alice_client, alice, chat):
    kept = make_conversation(alice, title="Packing list")
    make_message(kept, "user", "Boots?")

    response = alice_client.post(url(chat), follow=True)

    assert response.redirect_chain == [("/", 302)]
    chat_list = parse_html(response.content).find("nav", aria_label="Chats")
    assert [link.text for link in chat_list.find_all("a")] == ["Packing list"]
    assert not exists(chat)
    assert not Message.objects.filter(conversation_id=chat.pk).exists()
    assert list(Message.objects.values_list("content", flat=True)) == ["Boots?"]
    assert alice_client.get(f"/c/{chat.pk}/").status_code == 404


def test_htmx_is_told_to_go_home(alice_client, chat):
    response = alice_client.post(url(chat), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/"
    assert not exists(chat)


def test_it_rejects_other_users_conversation_and_leaves_it_alone(alice_client, bob):
    bobs = make_conversation(bob, title="Bob's chat")
    make_message(bobs, "user", "Keep this")

    response = alice_client.post(url(bobs), headers=HTMX)

    assert response.status_code == 404
    assert exists(bobs)
    assert list(bobs.messages.values_list("content", flat=True)) == ["Keep this"]


def test_deleting_a_chat_already_gone_is_not_found(alice_client, chat):
    alice_client.post(url(chat))

    assert alice_client.post(url(chat)).status_code == 404


def test_anonymous_is_sent_to_login(chat):
    response = Client().post(url(chat))

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url(chat)}"
    assert exists(chat)


def test_get_is_not_allowed(alice_client, chat):
    # A link or a prefetch must never delete anything.
    assert alice_client.get(url(chat)).status_code == 405
    assert exists(chat)


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
def test_it_requires_the_csrf_token(alice_csrf_client, chat, headers):
    alice_csrf_client.get(f"/c/{chat.pk}/")  # the CSRF cookie, without the token

    response = alice_csrf_client.post(url(chat), headers=headers)

    assert response.status_code == 403
    assert exists(chat)


def test_htmx_deletes_with_the_token_the_page_hands_it(alice_csrf_client, chat):
    token = htmx_csrf_token(alice_csrf_client.get(f"/c/{chat.pk}/"))

    response = alice_csrf_client.post(url(chat), headers=HTMX | {"X-CSRFToken": token})

    assert response["HX-Redirect"] == "/"
    assert not exists(chat)


def test_the_delete_button_asks_first(alice_client, chat):
    page = parse_html(alice_client.get(f"/c/{chat.pk}/").content)

    form = page.find("button", text="Delete chat").parent
    assert form.attrs["hx-post"] == url(chat)
    assert form.attrs["hx-confirm"] == "Delete this chat and all its messages?"


def test_without_javascript_the_delete_form_works(alice_csrf_client, chat):
    form = parse_html(alice_csrf_client.get(f"/c/{chat.pk}/").content).find("button", text="Delete chat").parent

    response = alice_csrf_client.post(form.attrs["action"], form.form_data())

    assert response.status_code == 302
    assert not exists(chat)


def test_deleted_from_the_list_while_another_chat_is_open_htmx_gets_the_list(alice_client, alice, chat):
    open_chat = make_conversation(alice, title="Packing list")

    response = alice_client.post(url(chat), headers=HTMX | {"HX-Current-URL": f"http://testserver/c/{open_chat.pk}/"})

    assert response.status_code == 200
    assert "HX-Redirect" not in response
    chat_list = parse_html(response.content).find("nav", aria_label="Chats")
    assert [link.text for link in chat_list.find_all("a")] == ["Packing list"]
    assert chat_list.find("a").attrs["aria-current"] == "page"
    assert not exists(chat)


def test_deleting_the_open_chat_sends_htmx_home(alice_client, chat):
    response = alice_client.post(url(chat), headers=HTMX | {"HX-Current-URL": f"http://testserver/c/{chat.pk}/"})

    assert response["HX-Redirect"] == "/"
    assert not exists(chat)
