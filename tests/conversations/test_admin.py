from decimal import Decimal

import pytest
from django.test import Client

from conversations.models import ChatModel, Message
from tests.conftest import make_conversation, make_message
from tests.dom import parse_html


@pytest.fixture
def chat(alice, catalog):
    chat = make_conversation(alice, title="Trip plans")
    make_message(chat, "user", "Where should we go in May?")
    make_message(
        chat,
        "assistant",
        "Lisbon is lovely in May.",
        model=chat.model,
        prompt_tokens=1000,
        completion_tokens=500,
        cost=chat.model.cost(prompt_tokens=1000, completion_tokens=500),
    )
    return chat


@pytest.fixture
def reply(chat) -> Message:
    return chat.messages.get(role="assistant")


def rows(response) -> list[dict[str, str]]:
    """The change list's table as the operator reads it: each row's cell texts by column heading."""
    table = parse_html(response.content).find("table", id="result_list")
    # A sorted column's heading also shows its sort priority; the label is in its `.text` part.
    headings = [(th.find_all(class_="text") or [th])[0].text for th in table.find("thead").find_all("th")]
    return [
        dict(zip(headings, [cell.text for cell in row.iter() if cell.tag in {"th", "td"}], strict=True))
        for row in table.find("tbody").find_all("tr")
    ]


def test_a_superuser_sees_the_users(admin_client, alice, bob):
    response = admin_client.get("/admin/accounts/user/")

    assert response.status_code == 200
    usernames = [row["Username"] for row in rows(response)]
    assert sorted(usernames) == ["alice", "bob", "root"]


def test_a_superuser_sees_the_conversations_with_their_owner(admin_client, chat):
    response = admin_client.get("/admin/conversations/conversation/")

    assert response.status_code == 200
    assert [(row["Conversation"], row["User"], row["Model"]) for row in rows(response)] == [
        ("Trip plans", "alice", "GPT-4o mini")
    ]


def test_a_conversation_page_shows_its_messages(admin_client, chat):
    response = admin_client.get(f"/admin/conversations/conversation/{chat.pk}/change/")

    assert response.status_code == 200
    page = parse_html(response.content)
    inline = page.find(id="messages-group")
    text = inline.text
    assert "Where should we go in May?" in text
    assert "Lisbon is lovely in May." in text
    assert "1000" in text and "500" in text
    assert "0.00045000" in text
    # The ledger is shown, not editable: no message fields, no empty row to add one.
    assert not inline.find_all("textarea")
    assert not inline.find_all("input", name="messages-0-content")
    assert inline.find("input", name="messages-MAX_NUM_FORMS").attrs["value"] == "0"


def test_the_message_list_shows_tokens_and_cost(admin_client, reply):
    response = admin_client.get("/admin/conversations/message/")

    assert response.status_code == 200
    table = rows(response)
    assert len(table) == 2
    reply_row = next(row for row in table if row["ID"] == str(reply.pk))
    assert (
        reply_row["Prompt tokens"],
        reply_row["Completion tokens"],
        reply_row["Cached tokens"],
        reply_row["Cost"],
        reply_row["User"],
        reply_row["Model"],
    ) == ("1000", "500", "0", "0.00045000", "alice", "GPT-4o mini")


def test_a_superuser_sees_the_model_catalog_and_edits_a_price(admin_client):
    listing = admin_client.get("/admin/conversations/chatmodel/")
    assert listing.status_code == 200
    catalog = {row["Model id"]: (row["Display name"], row["Input price"], row["Output price"]) for row in rows(listing)}
    assert catalog == {
        "gpt-4o": ("GPT-4o", "2.500000", "10.000000"),
        "gpt-4o-mini": ("GPT-4o mini", "0.150000", "0.600000"),
        "gpt-realtime": ("GPT Realtime (voice)", "4.000000", "16.000000"),
        "gpt-realtime-2": ("GPT Realtime 2 (voice)", "4.000000", "16.000000"),
        "smollm2-135m": ("SmolLM2 135M (local)", "0.000000", "0.000000"),
        "text-embedding-3-small": ("Text embedding 3 small", "0.020000", "0.000000"),
    }

    gpt4o = ChatModel.objects.get(model_id="gpt-4o")
    url = f"/admin/conversations/chatmodel/{gpt4o.pk}/change/"
    form = parse_html(admin_client.get(url).content).find("form", id="chatmodel_form")
    response = admin_client.post(url, form.form_data() | {"input_price": "2.25", "output_price": "9.50"})

    assert response.status_code == 302
    gpt4o.refresh_from_db()
    assert (gpt4o.input_price, gpt4o.output_price) == (Decimal("2.25"), Decimal("9.50"))
    assert gpt4o.display_name == "GPT-4o"  # the rest of the row is as it was
    assert gpt4o.enabled


def test_an_edited_price_does_not_rewrite_stored_costs(admin_client, reply):
    mini = reply.model
    url = f"/admin/conversations/chatmodel/{mini.pk}/change/"
    form = parse_html(admin_client.get(url).content).find("form", id="chatmodel_form")

    admin_client.post(url, form.form_data() | {"input_price": "99"})

    reply.refresh_from_db()
    assert reply.cost == Decimal("0.00045000")


def test_messages_cannot_be_added(admin_client, reply):
    assert admin_client.get("/admin/conversations/message/add/").status_code == 403
    listing = parse_html(admin_client.get("/admin/conversations/message/").content)
    assert not listing.find_all("a", href="/admin/conversations/message/add/")


def test_a_message_page_is_read_only(admin_client, reply):
    url = f"/admin/conversations/message/{reply.pk}/change/"

    response = admin_client.get(url)

    assert response.status_code == 200
    page = parse_html(response.content)
    assert "Lisbon is lovely in May." in page.text
    assert not page.find_all("input", type="submit")
    assert not page.find_all("textarea")
    assert not page.find_all("a", class_="deletelink")

    admin_client.post(url, {"content": "Rewritten", "cost": "0"})
    reply.refresh_from_db()
    assert (reply.content, reply.cost) == ("Lisbon is lovely in May.", Decimal("0.00045000"))


def test_messages_cannot_be_deleted(admin_client, reply):
    url = f"/admin/conversations/message/{reply.pk}/delete/"

    assert admin_client.get(url).status_code == 403
    assert admin_client.post(url, {"post": "yes"}).status_code == 403
    admin_client.post(
        "/admin/conversations/message/", {"action": "delete_selected", "_selected_action": [reply.pk], "post": "yes"}
    )
    assert Message.objects.filter(pk=reply.pk).exists()


def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(alice, chat):
    client = Client()
    client.force_login(alice)

    response = client.get("/admin/conversations/message/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
