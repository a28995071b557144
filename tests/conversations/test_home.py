from datetime import timedelta

from django.test import Client
from django.utils import timezone

from conversations.models import ChatModel, Conversation
from tests.conftest import HTMX, htmx_csrf_token, make_conversation
from tests.dom import parse_html


def test_it_shows_the_chat_page_with_composer_send_and_new_chat(alice_client):
    response = alice_client.get("/")

    assert response.status_code == 200
    page = parse_html(response.content)
    composer = page.labelled("Message")
    assert composer.tag == "textarea"
    assert composer.attrs["name"] == "text"
    form = page.find("form", id="composer")
    assert form.attrs["method"] == "post"
    assert form.attrs["action"] == "/c/new/messages/"
    assert form.find("button", text="Send").attrs["type"] == "submit"
    assert page.find("a", text="New chat").attrs["href"] == "/"
    assert page.find("p", class_="empty").text == "Send a message to start."


def test_it_lists_the_chats_most_recently_active_first(alice_client, alice):
    now = timezone.now()
    # Created newest but idle longest: activity, not creation, orders the list.
    make_conversation(alice, title="Old news", created_at=now, updated_at=now - timedelta(days=3))
    make_conversation(alice, title="Yesterday", created_at=now - timedelta(days=5), updated_at=now - timedelta(days=1))
    make_conversation(alice, title="Just now", created_at=now - timedelta(days=9), updated_at=now)

    page = parse_html(alice_client.get("/").content)

    chat_list = page.find("nav", aria_label="Chats")
    assert [link.text for link in chat_list.find_all("a")] == ["Just now", "Yesterday", "Old news"]


def test_it_links_each_chat_to_its_page(alice_client, alice):
    chat = make_conversation(alice, title="Trip plans")

    page = parse_html(alice_client.get("/").content)

    assert page.find("nav", aria_label="Chats").find("a", text="Trip plans").attrs["href"] == f"/c/{chat.pk}/"


def test_it_lists_only_the_users_own_chats(alice_client, alice, bob):
    make_conversation(alice, title="Alice's chat")
    make_conversation(bob, title="Bob's secret plans")

    response = alice_client.get("/")

    chat_list = parse_html(response.content).find("nav", aria_label="Chats")
    assert [link.text for link in chat_list.find_all("a")] == ["Alice's chat"]
    assert b"secret plans" not in response.content


def test_it_says_so_when_there_are_no_chats_yet(alice_client):
    page = parse_html(alice_client.get("/").content)

    assert page.find("nav", aria_label="Chats").text == "No chats yet."


def test_the_model_picker_lists_only_enabled_models_with_the_default_selected(alice_client):
    # The catalog fixture seeds for an OpenAI upstream: the local model is disabled, gpt-4o-mini is the default.
    assert not ChatModel.objects.get(model_id="smollm2-135m").enabled

    page = parse_html(alice_client.get("/").content)

    picker = page.labelled("Model")
    options = [(option.attrs["value"], option.text, "selected" in option.attrs) for option in picker.find_all("option")]
    assert options == [("gpt-4o", "GPT-4o", False), ("gpt-4o-mini", "GPT-4o mini", True)]


def test_the_model_picker_follows_the_default_an_admin_chose(alice_client):
    ChatModel.objects.update(is_default=False)
    ChatModel.objects.filter(model_id="smollm2-135m").update(enabled=True)
    ChatModel.objects.filter(model_id="gpt-4o").update(is_default=True)

    picker = parse_html(alice_client.get("/").content).labelled("Model")

    assert [option.attrs["value"] for option in picker.find_all("option")] == ["gpt-4o", "gpt-4o-mini", "smollm2-135m"]
    assert picker.find("option", selected=True).attrs["value"] == "gpt-4o"


def test_anonymous_is_sent_to_login(catalog):
    response = Client().get("/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_post_is_not_allowed(alice_client):
    response = alice_client.post("/")

    assert response.status_code == 405
    assert not Conversation.objects.exists()


def test_htmx_gets_only_the_chat_fragment(alice_client, alice):
    make_conversation(alice, title="Trip plans")

    response = alice_client.get("/", headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    assert b"<body" not in response.content
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [("main", "chat")]
    assert fragment.labelled("Message").tag == "textarea"
    assert not fragment.find_all("nav")  # the chat list stays where it is
    assert b"Trip plans" not in response.content


def test_it_hands_htmx_a_csrf_token_that_works(alice_csrf_client, alice):
    chat = make_conversation(alice, title="Trip plans")
    token = htmx_csrf_token(alice_csrf_client.get("/"))

    refused = alice_csrf_client.post(f"/c/{chat.pk}/rename/", {"title": "Forged"}, headers=HTMX)
    accepted = alice_csrf_client.post(
        f"/c/{chat.pk}/rename/", {"title": "Renamed"}, headers=HTMX | {"X-CSRFToken": token}
    )

    assert refused.status_code == 403
    assert accepted.status_code == 200
    chat.refresh_from_db()
    assert chat.title == "Renamed"
