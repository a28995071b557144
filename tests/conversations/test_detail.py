from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from conversations.models import Message
from conversations.services.replies import INTERRUPTED_TEXT
from tests.conftest import HTMX, make_conversation, make_message
from tests.dom import parse_html


@pytest.fixture
def chat(alice, catalog):
    return make_conversation(alice, title="Trip plans")


def open_chat(client, chat, **kwargs):
    response = client.get(f"/c/{chat.pk}/", **kwargs)
    assert response.status_code == 200
    return parse_html(response.content)


def article_of(page, message):
    return page.find("article", id=f"message-{message.pk}")


def test_it_shows_the_messages_in_the_order_they_were_sent(alice_client, chat):
    now = timezone.now()
    # Rows written out of order: the page follows the time they were sent.
    make_message(chat, "assistant", "Second answer", created_at=now - timedelta(minutes=1))
    make_message(chat, "user", "First question", created_at=now - timedelta(minutes=4))
    make_message(chat, "user", "Second question", created_at=now - timedelta(minutes=2))
    make_message(chat, "assistant", "First answer", created_at=now - timedelta(minutes=3))

    page = open_chat(alice_client, chat)

    messages = page.find("section", id="messages").find_all("article")
    assert [(m.attrs["class"].split()[1], m.find(class_="content").text) for m in messages] == [
        ("user", "First question"),
        ("assistant", "First answer"),
        ("user", "Second question"),
        ("assistant", "Second answer"),
    ]


def test_it_shows_the_chat_name_in_the_title_and_the_rename_box(alice_client, chat):
    page = open_chat(alice_client, chat)

    assert page.find("title").text == "Trip plans · Chat"
    assert page.labelled("Chat name").attrs["value"] == "Trip plans"
    assert page.find("nav", aria_label="Chats").find("a", aria_current="page").text == "Trip plans"


def test_it_renders_assistant_markdown_with_highlighted_copyable_code(alice_client, chat):
    reply = make_message(
        chat,
        "assistant",
        "# Packing list\n\nBring **boots**.\n\n```python\ndef greet():\n    return 'hi'\n```\n",
    )

    answer = article_of(open_chat(alice_client, chat), reply)

    assert answer.find("h1").text == "Packing list"
    assert answer.find("strong").text == "boots"
    code_block = answer.find("pre")
    assert code_block.parent.has_class("markdown")  # chat_markdown.js draws it again, with Copy, in the browser
    code = code_block.find("code")
    assert code.text == "def greet(): return 'hi'"
    # Pygments token classes, coloured by pygments.css.
    assert [span.text for span in code.find_all("span", class_="k")] == ["def", "return"]
    assert code.find("span", class_="nf").text == "greet"


def test_it_shows_user_text_as_typed_not_as_markdown(alice_client, chat):
    message = make_message(chat, "user", "# not a heading\n*not emphasis*")

    response = alice_client.get(f"/c/{chat.pk}/")

    article = article_of(parse_html(response.content), message)
    assert not article.find_all("h1")
    assert not article.find_all("em")
    assert article.find(class_="content").text == "# not a heading *not emphasis*"


ATTACKS = (
    '<script>alert("x")</script> <img src=x onerror=alert(1)> '
    "<a href=\"javascript:alert(1)\">link</a> [click](javascript:alert(2)) <iframe src='https://evil.example'>"
)


def assert_inert(element):
    """No element that runs script: no script or embedded page, no handler attribute, no javascript: URL."""
    for node in [element, *element.iter()]:
        assert node.tag not in {"script", "img", "iframe", "object", "embed", "svg"}, node
        for name, value in node.attrs.items():
            assert not name.startswith("on"), node
            assert not value.strip().lower().startswith("javascript:"), node


def test_script_in_a_user_message_is_shown_as_text_never_run(alice_client, chat):
    message = make_message(chat, "user", ATTACKS)

    response = alice_client.get(f"/c/{chat.pk}/")

    article = article_of(parse_html(response.content), message)
    assert_inert(article)
    assert article.find(class_="content").text == " ".join(ATTACKS.split())  # the user sees what they typed
    assert b"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in response.content
    messages_html = response.content.split(b'<section id="messages"')[1]
    assert b"<script" not in messages_html
    assert b"<img" not in messages_html


def test_script_in_an_assistant_reply_is_removed(alice_client, chat):
    reply = make_message(chat, "assistant", f"Here you go: {ATTACKS}\n\nSee [the docs](https://example.com/docs).")

    response = alice_client.get(f"/c/{chat.pk}/")

    answer = article_of(parse_html(response.content), reply)
    assert_inert(answer)
    links = answer.find(class_="markdown").find_all("a")
    assert [(link.text, link.attrs["href"]) for link in links] == [("the docs", "https://example.com/docs")]
    assert "noopener" in links[0].attrs["rel"]
    messages_html = response.content.split(b'<section id="messages"')[1]
    assert b"<script" not in messages_html
    assert b"<img" not in messages_html
    assert b'<a href="javascript:' not in messages_html


def test_an_error_reply_shows_what_went_wrong(alice_client, chat):
    reply = make_message(
        chat,
        "assistant",
        "Partial",
        status=Message.Status.ERROR,
        error_code="rate_limited",
        error_text="The model is busy right now. Try again in a minute.",
    )

    answer = article_of(open_chat(alice_client, chat), reply)

    assert answer.find(role="alert").text == "The model is busy right now. Try again in a minute."
    assert answer.find(class_="markdown").text == "Partial"


def test_a_stopped_reply_says_stopped(alice_client, chat):
    reply = make_message(chat, "assistant", "Once upon a", status=Message.Status.STOPPED)

    answer = article_of(open_chat(alice_client, chat), reply)

    assert answer.find(class_="markdown").text == "Once upon a"
    assert answer.find("p", text="Stopped.")
    assert not answer.find_all("button", text="Stop")


def test_a_finished_reply_shows_its_model_tokens_and_cost(alice_client, chat, settings):
    settings.SHOW_COSTS = True
    reply = make_message(
        chat,
        "assistant",
        "Hello!",
        model=chat.model,
        prompt_tokens=1200,
        completion_tokens=340,
        cost=chat.model.cost(prompt_tokens=1200, completion_tokens=340),
    )

    answer = article_of(open_chat(alice_client, chat), reply)

    assert answer.find(class_="usage").text == "GPT-4o mini · 1200 in / 340 out · $0.000384"


def test_a_streaming_reply_shows_its_text_so_far_and_a_stop_button(alice_client, chat, settings):
    settings.STREAM_STALE_AFTER = 30
    reply = make_message(chat, "assistant", "Once upon", status=Message.Status.STREAMING, model=chat.model)

    answer = article_of(open_chat(alice_client, chat), reply)

    assert answer.find(class_="content").text == "Once upon"
    assert answer.attrs["data-stream-url"] == f"/c/{chat.pk}/messages/{reply.pk}/stream/"
    assert answer.attrs["data-offset"] == "9"  # the watcher continues after the text shown
    assert answer.find("button", text="Stop")
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING


def test_a_reply_whose_writer_died_is_shown_interrupted_with_its_text(alice_client, chat, settings):
    settings.STREAM_STALE_AFTER = 30
    reply = make_message(
        chat,
        "assistant",
        "The first three steps are",
        status=Message.Status.STREAMING,
        model=chat.model,
        updated_at=timezone.now() - timedelta(seconds=31),
    )
    call_command("sweep")  # as every server process does on its timer

    answer = article_of(open_chat(alice_client, chat), reply)

    assert answer.find(class_="markdown").text == "The first three steps are"
    assert answer.find(role="alert").text == INTERRUPTED_TEXT
    assert "data-stream-url" not in answer.attrs
    assert not answer.find_all("button", text="Stop")
    reply.refresh_from_db()
    assert reply.status == Message.Status.INTERRUPTED
    assert reply.content == "The first three steps are"


def test_anonymous_is_sent_to_login(chat):
    response = Client().get(f"/c/{chat.pk}/")

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/c/{chat.pk}/"


def test_it_rejects_other_users_conversation(alice_client, bob):
    bobs = make_conversation(bob, title="Bob's secret plans")
    make_message(bobs, "user", "My bank PIN is 1234")

    response = alice_client.get(f"/c/{bobs.pk}/")

    assert response.status_code == 404
    assert b"1234" not in response.content
    assert b"secret plans" not in response.content


@pytest.mark.parametrize("path", ["/c/abc/", "/c/-1/", "/c/1.5/", "/c/99999999/", "/c/99999999999999999999/"])
def test_a_malformed_or_unknown_chat_id_is_not_found(alice_client, path):
    assert alice_client.get(path).status_code == 404


def test_post_is_not_allowed(alice_client, chat):
    response = alice_client.post(f"/c/{chat.pk}/")

    assert response.status_code == 405


def test_htmx_gets_only_the_chat_fragment(alice_client, chat):
    message = make_message(chat, "user", "Where should we go?")

    response = alice_client.get(f"/c/{chat.pk}/", headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    fragment = parse_html(response.content)
    top_level = [child for child in fragment.children if not isinstance(child, str)]
    assert [(element.tag, element.attrs.get("id")) for element in top_level] == [("main", "chat")]
    assert article_of(fragment, message).find(class_="content").text == "Where should we go?"
    assert not fragment.find_all("nav")
