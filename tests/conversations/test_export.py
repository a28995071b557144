"""Exporting a chat: GET /c/<id>/export/markdown/ and /c/<id>/export/json/, a download for its owner only."""

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client

from conversations.models import ChatModel
from tests.conftest import make_conversation, make_message
from tests.dom import parse_html

FORMATS = pytest.mark.parametrize("fmt", ["markdown", "json"])
STARTED = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)


@pytest.fixture
def chat(alice, catalog):
    mini = ChatModel.objects.get(model_id="gpt-4o-mini")
    chat = make_conversation(
        alice, title="Trip: Lisbon / Porto", model=mini, system_prompt="Be brief.", created_at=STARTED
    )
    make_message(chat, "user", "Where should we go in **May**?", created_at=STARTED)
    make_message(
        chat,
        "assistant",
        "Lisbon, then Porto.\n\n```\ntrain: 3h\n```",
        model=mini,
        prompt_tokens=1000,
        completion_tokens=500,
        cost=Decimal("0.00045"),
        created_at=STARTED,
    )
    make_message(
        chat, "assistant", "", model=mini, status="error", error_text="The model provider is down.", created_at=STARTED
    )
    return chat


def url(chat, fmt: str) -> str:
    return f"/c/{chat.pk}/export/{fmt}/"


@pytest.fixture
def costs_shown(settings):
    settings.SHOW_COSTS = True


def test_markdown_has_the_name_model_times_messages_tokens_and_cost(alice_client, chat, costs_shown):
    response = alice_client.get(url(chat, "markdown"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="trip-lisbon-porto-{chat.pk}.md"'
    text = response.content.decode()
    assert text.startswith("# Trip: Lisbon / Porto\n")
    assert "- Model: GPT-4o mini (`gpt-4o-mini`)" in text
    assert "Started: 2026-11-29 09:30 UTC" in text
    assert "- Tokens: 1,000 in / 500 out; cost $0.00045000" in text
    assert "> Be brief." in text
    assert "## You · 2026-11-29 09:30 UTC\n\nWhere should we go in **May**?\n" in text
    assert "## GPT-4o mini · 2026-11-29 09:30 UTC\n\nLisbon, then Porto.\n\n```\ntrain: 3h\n```\n" in text
    assert "*1,000 in / 500 out · $0.00045000*" in text
    assert "> The model provider is down." in text


def test_json_has_every_message_with_its_figures(alice_client, chat, costs_shown):
    response = alice_client.get(url(chat, "json"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == f'attachment; filename="trip-lisbon-porto-{chat.pk}.json"'
    data = json.loads(response.content)
    assert (data["id"], data["title"], data["model"], data["system_prompt"]) == (
        chat.pk,
        "Trip: Lisbon / Porto",
        "gpt-4o-mini",
        "Be brief.",
    )
    assert data["created_at"] == "2026-11-29T09:30:00+00:00"
    assert data["totals"] == {"prompt_tokens": 1000, "completion_tokens": 500, "cost_usd": "0.00045000"}
    user, reply, failed = data["messages"]
    assert user == {
        "role": "user",
        "content": "Where should we go in **May**?",
        "created_at": "2026-11-29T09:30:00+00:00",
    }
    assert (reply["role"], reply["model"], reply["prompt_tokens"], reply["completion_tokens"]) == (
        "assistant",
        "gpt-4o-mini",
        1000,
        500,
    )
    assert (reply["cost_usd"], reply["status"], reply["usage_estimated"]) == ("0.00045000", "complete", False)
    assert (failed["status"], failed["error"]) == ("error", "The model provider is down.")


@FORMATS
def test_costs_stay_out_of_the_export_unless_the_site_shows_them(alice_client, chat, fmt):
    text = alice_client.get(url(chat, fmt)).content.decode()

    assert "cost" not in text
    assert "0.00045" not in text
    assert "1,000 in / 500 out" in text or '"prompt_tokens": 1000' in text


def test_a_chat_without_a_name_or_messages_still_exports(alice_client, alice, catalog):
    empty = make_conversation(alice)

    response = alice_client.get(url(empty, "json"))

    assert response["Content-Disposition"] == f'attachment; filename="chat-{empty.pk}.json"'
    assert json.loads(response.content)["title"] == f"Chat {empty.pk}"
    assert json.loads(response.content)["messages"] == []


@FORMATS
def test_another_users_chat_is_not_found(alice_client, bob, catalog, fmt):
    bobs = make_conversation(bob, title="Bob's secrets")
    make_message(bobs, "user", "My password is hunter2")

    response = alice_client.get(url(bobs, fmt))

    assert response.status_code == 404
    assert b"hunter2" not in response.content


@FORMATS
def test_anonymous_is_sent_to_login(chat, fmt):
    response = Client().get(url(chat, fmt))

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url(chat, fmt)}"


@FORMATS
def test_post_is_not_allowed(alice_client, chat, fmt):
    assert alice_client.post(url(chat, fmt)).status_code == 405


def test_the_chat_menu_offers_both_downloads(alice_client, chat):
    page = parse_html(alice_client.get(f"/c/{chat.pk}/").content)
    menu = page.find("header").find("details", class_="chat-menu")

    actions = {form.find("button").text: (form.attrs["method"], form.attrs["action"]) for form in menu.find_all("form")}
    assert actions["Export as Markdown"] == ("get", url(chat, "markdown"))
    assert actions["Export as JSON"] == ("get", url(chat, "json"))
    assert actions["Delete chat"] == ("post", f"/c/{chat.pk}/delete/")
