import pytest
from django.test import Client

from conversations.models import Message
from tests.conftest import HTMX, make_conversation, make_message
from tests.dom import parse_html


@pytest.fixture
def chat(alice, catalog):
    return make_conversation(alice, title="Trip plans")


@pytest.fixture
def reply(chat):
    make_message(chat, "user", "What should I pack?")
    return make_message(
        chat, "assistant", "## Packing\n\n- boots\n- a **map**", model=chat.model, prompt_tokens=12, completion_tokens=9
    )


def url(message: Message) -> str:
    return f"/c/{message.conversation_id}/messages/{message.pk}/"


def test_htmx_gets_the_finished_message_alone(alice_client, reply):
    # What the page swaps in when a streamed reply ends: the stored text, rendered, and the
    # usage meter beside the chat list, swapped out of band since the reply changed it.
    response = alice_client.get(url(reply), headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [
        ("article", f"message-{reply.pk}"),
        ("a", "usage-link"),
    ]
    assert top_level[1].attrs.get("hx-swap-oob") == "true"
    article = top_level[0]
    assert article.find("h2").text == "Packing"
    assert [item.text for item in article.find_all("li")] == ["boots", "a map"]
    assert article.find(class_="usage").text.startswith("GPT-4o mini · 12 in / 9 out")
    assert "What should I pack?" not in fragment.text  # only this message, not the chat


def test_htmx_gets_a_reply_still_streaming_with_its_stream_and_stop(alice_client, chat):
    reply = make_message(chat, "assistant", "Once", status=Message.Status.STREAMING, model=chat.model)

    article = parse_html(alice_client.get(url(reply), headers=HTMX).content).find("article")

    assert article.attrs["data-stream-url"] == f"/c/{chat.pk}/messages/{reply.pk}/stream/"
    assert article.find("button", text="Stop")


def test_without_htmx_it_sends_the_browser_to_the_message_in_its_chat(alice_client, reply):
    response = alice_client.get(url(reply))

    assert response.status_code == 302
    assert response["Location"] == f"/c/{reply.conversation_id}/#message-{reply.pk}"


def test_anonymous_is_sent_to_login(reply):
    response = Client().get(url(reply), headers=HTMX)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_it_rejects_other_users_message(alice_client, bob):
    bobs_chat = make_conversation(bob, title="Bob's chat")
    bobs_reply = make_message(bobs_chat, "assistant", "Bob's secret answer")

    htmx_response = alice_client.get(url(bobs_reply), headers=HTMX)
    plain_response = alice_client.get(url(bobs_reply))

    assert htmx_response.status_code == 404
    assert plain_response.status_code == 404
    assert b"secret answer" not in htmx_response.content


def test_it_rejects_a_message_under_the_wrong_chat(alice_client, alice, reply, bob):
    other_chat = make_conversation(alice, title="Another chat of Alice's")
    bobs_chat = make_conversation(bob, title="Bob's chat")

    # Bob's chat id with Alice's message: the chat in the URL must own the message.
    assert alice_client.get(f"/c/{bobs_chat.pk}/messages/{reply.pk}/", headers=HTMX).status_code == 404
    assert alice_client.get(f"/c/{other_chat.pk}/messages/{reply.pk}/", headers=HTMX).status_code == 404


def test_post_is_not_allowed(alice_client, reply):
    response = alice_client.post(url(reply), headers=HTMX)

    assert response.status_code == 405
