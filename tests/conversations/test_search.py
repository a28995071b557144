"""Searching one's chats: GET /search/?q=..., the box above the chat list, and the search service itself."""

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations.services.search import chat_search, snippet
from tests.conftest import HTMX, make_conversation, make_message
from tests.dom import parse_html

URL = "/search/"
BOTH_WAYS = pytest.mark.parametrize("full_text", [True, False], ids=["full-text", "scan"])


@pytest.fixture
def chats(alice, bob, catalog):
    """Alice's three chats, one mentioning a quokka only deep inside a reply; Bob's chat about quokkas too."""
    garden = make_conversation(alice, title="Garden")
    make_message(garden, "user", "What should I plant in May?")
    make_message(garden, "assistant", "Tomatoes. " * 30 + "Rottnest has quokkas, but not in gardens. " + "Beans. " * 30)
    travel = make_conversation(alice, title="Quokka selfies in Perth")
    make_message(travel, "user", "Where do I find them?")
    make_conversation(alice, title="Taxes")
    bobs = make_conversation(bob, title="Bob's notes")
    make_message(bobs, "user", "Quokka facts, secret ones")
    return {"garden": garden, "travel": travel, "bobs": bobs}


def titles(hits) -> list[str]:
    return [hit.conversation.title for hit in hits]


@BOTH_WAYS
def test_a_word_only_inside_a_message_finds_its_chat(alice, chats, full_text):
    hits = chat_search(user=alice, query="rottnest", full_text=full_text)

    assert titles(hits) == ["Garden"]
    found = [piece for piece, is_word in hits[0].snippet if is_word]
    assert found == ["Rottnest"]
    shown = "".join(piece for piece, _ in hits[0].snippet)
    assert shown.startswith("…") and shown.endswith("…")  # a stretch of the reply, not all of it
    assert "Rottnest has quokkas, but not in gardens." in shown


@BOTH_WAYS
def test_names_and_messages_are_searched_and_other_users_chats_never(alice, chats, full_text):
    hits = chat_search(user=alice, query="Quokka", full_text=full_text)

    assert sorted(titles(hits)) == ["Garden", "Quokka selfies in Perth"]


@BOTH_WAYS
def test_every_word_must_be_found_and_the_start_of_a_word_is_enough(alice, chats, full_text):
    assert titles(chat_search(user=alice, query="quok gard", full_text=full_text)) == ["Garden"]
    assert titles(chat_search(user=alice, query="quokka taxes", full_text=full_text)) == []


@BOTH_WAYS
def test_query_syntax_is_only_words(alice, chats, full_text):
    for query in ["quokka:* | !taxes", "'; DROP TABLE", "a & (b", "<script>", "   ", "*"]:
        hits = chat_search(user=alice, query=query, full_text=full_text)
        assert "Bob's notes" not in titles(hits)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=60))
def test_any_query_finds_only_the_users_own_chats(alice, chats, query):
    for full_text in (True, False):
        hits = chat_search(user=alice, query=query, full_text=full_text)
        assert all(hit.conversation.user_id == alice.pk for hit in hits)


@given(
    text=st.text(st.characters(max_codepoint=127), max_size=400),
    word=st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True),
)
def test_a_snippet_is_a_stretch_of_the_text_with_the_words_marked(text, word):
    pieces = snippet(text, [word])

    shown = "".join(piece for piece, _ in pieces).removeprefix("…").removesuffix("…")
    assert shown in " ".join(text.split())
    assert all(piece.lower().startswith(word.lower()) for piece, is_word in pieces if is_word)
    if word.lower() in " ".join(text.split()).lower():
        assert any(is_word for _, is_word in pieces)


def test_htmx_gets_the_chat_list_with_the_results(alice_client, chats):
    response = alice_client.get(URL, {"q": "rottnest"}, headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    found = parse_html(response.content).find("nav", aria_label="Chats")
    assert [link.text for link in found.find_all("a")] == ["Garden"]
    assert found.find("a").attrs["href"] == f"/c/{chats['garden'].pk}/"
    assert found.find("mark").text == "Rottnest"


def test_the_page_without_javascript_shows_the_results_and_keeps_the_words(alice_client, chats):
    response = alice_client.get(URL, {"q": "rottnest"})

    assert response.status_code == 200
    page = parse_html(response.content)
    assert [link.text for link in page.find("nav", aria_label="Chats").find_all("a")] == ["Garden"]
    assert page.labelled("Search chats").attrs["value"] == "rottnest"
    assert page.labelled("Message").tag == "textarea"  # a new chat can start from here


def test_the_search_box_is_a_form_htmx_sends_as_one_types(alice_client, chats):
    form = parse_html(alice_client.get("/").content).find("form", role="search")

    assert (form.attrs["method"], form.attrs["action"], form.attrs["hx-get"]) == ("get", URL, URL)
    assert form.attrs["hx-target"] == "#conversation-list"
    assert form.find("input", name="q").attrs["type"] == "search"


def test_nothing_found_says_so(alice_client, chats):
    response = alice_client.get(URL, {"q": "zebra"}, headers=HTMX)

    assert parse_html(response.content).find("nav", aria_label="Chats").text == "No chats match “zebra”."


def test_an_empty_search_gives_the_whole_list_back(alice_client, chats):
    response = alice_client.get(URL, {"q": "  "}, headers=HTMX)

    chat_list = parse_html(response.content).find("nav", aria_label="Chats")
    assert [link.text for link in chat_list.find_all("a")] == ["Taxes", "Quokka selfies in Perth", "Garden"]


def test_a_long_or_odd_query_is_answered(alice_client, chats):
    for query in ["x" * 5000, "\x00", "%", "🦘 quokka"]:
        assert alice_client.get(URL, {"q": query}, headers=HTMX).status_code == 200


def test_anonymous_is_sent_to_login(chats):
    response = Client().get(URL, {"q": "quokka"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_post_is_not_allowed(alice_client, chats):
    assert alice_client.post(URL, {"q": "quokka"}).status_code == 405
