"""What the chat page gives the browser's Markdown renderer (static/chat_markdown.js), and the page without JavaScript.

The browser draws every reply from its Markdown source, the same way while it
streams and once it has ended; the server's rendering is the first paint and the
page without JavaScript.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.models import Message
from tests.conftest import make_conversation, make_message
from tests.dom import parse_html


def open_chat(client, chat):
    response = client.get(f"/c/{chat.pk}/")
    assert response.status_code == 200
    return response, parse_html(response.content)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1).filter(lambda text: "\r" not in text and "\x00" not in text))
def test_a_reply_carries_its_markdown_source_exactly_and_inertly(alice_client, alice, catalog, text):
    chat = make_conversation(alice, title="Source")
    reply = make_message(chat, "assistant", text)

    response, page = open_chat(alice_client, chat)

    content = page.find("article", id=f"message-{reply.pk}").find(class_="markdown")
    assert content.attrs["data-source"] == text
    messages_html = response.content.split(b'<section id="messages"')[1]
    assert b"<script" not in messages_html


def test_a_reply_with_markup_in_its_source_cannot_break_out_of_the_attribute(alice_client, alice, catalog):
    chat = make_conversation(alice, title="Quotes")
    text = "\"><script>alert(1)</script><img src=x onerror=alert(2)> ' & done"
    reply = make_message(chat, "assistant", text)

    response, page = open_chat(alice_client, chat)

    answer = page.find("article", id=f"message-{reply.pk}")
    assert answer.find(class_="markdown").attrs["data-source"] == text
    assert not answer.find_all("script") and not answer.find_all("img")
    assert b'data-source="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;' in response.content


def test_without_javascript_a_streaming_reply_offers_stop_and_the_composer_send(alice_client, alice, catalog):
    chat = make_conversation(alice, title="Live")
    reply = make_message(chat, "assistant", "Once", status=Message.Status.STREAMING, model=chat.model)

    _, page = open_chat(alice_client, chat)

    answer = page.find("article", id=f"message-{reply.pk}")
    stop_url = f"/c/{chat.pk}/messages/{reply.pk}/stop/"
    assert answer.attrs["data-stop-url"] == stop_url  # what the composer's Stop posts to, with JavaScript
    fallback = answer.find("noscript").find("form")
    assert fallback.attrs["action"] == stop_url and fallback.find("button", text="Stop")
    composer = page.find("form", id="composer")
    assert "hidden" not in composer.find("button", text="Send").attrs
    assert "hidden" in composer.find("button", text="Stop").attrs  # shown by chat.js while a reply streams
