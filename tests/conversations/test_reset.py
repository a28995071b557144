"""Resetting a chat: the staff-only button (POST /c/<id>/reset/) and the admin action for anyone's chats.

A reset removes the messages and keeps the chat, the spending records and an
audit entry; it stops a reply still being written and tells open pages.
"""

import asyncio
import json
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.test import AsyncClient, Client

from accounts.billing.budget import budget_settle, usage_summary
from accounts.models import AuditEntry, DailyUsage, Reservation, UsageRecord, User
from conversations.models import Conversation, Message
from conversations.services.chats import conversation_reset
from tests.conftest import HTMX, PASSWORD, make_conversation, make_message, parse_sse, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import Reply

CONVERSATIONS = "/admin/conversations/conversation/"
START = "/c/new/messages/"


def reset_url(conversation: Conversation) -> str:
    return f"/c/{conversation.pk}/reset/"


@pytest.fixture
def sam(db) -> User:
    return User.objects.create_user("sam", password=PASSWORD, is_staff=True)


@pytest.fixture
def sam_client(sam, catalog) -> Client:
    client = Client()
    client.force_login(sam)
    return client


def chat_with_spending(user: User, title: str = "Trip plans") -> Conversation:
    """A chat with a question and a paid reply, its spending on record as budget_settle writes it."""
    chat = make_conversation(user, title=title)
    make_message(chat, "user", "Where should we go in May?")
    reply = make_message(
        chat,
        "assistant",
        "Lisbon is lovely in May.",
        model=chat.model,
        prompt_tokens=1000,
        completion_tokens=500,
        cost=chat.model.cost(prompt_tokens=1000, completion_tokens=500),
    )
    budget_settle(
        reservation_id=None,
        user_id=user.pk,
        model=chat.model,
        kind=UsageRecord.Kind.REPLY,
        prompt_tokens=1000,
        completion_tokens=500,
        message_id=reply.pk,
    )
    return chat


def shown_messages(client: Client, chat: Conversation) -> list[str]:
    page = parse_html(client.get(f"/c/{chat.pk}/").content)
    return [article.text for article in page.find(id="messages").find_all("article")]


def spending(user: User) -> tuple:
    summary = usage_summary(user=user)
    records = list(UsageRecord.objects.filter(user=user).values_list("prompt_tokens", "completion_tokens", "cost"))
    daily = list(DailyUsage.objects.filter(user=user).values_list("tokens", "cost"))
    return summary.tokens_today, summary.usd_this_month, records, daily


# -- The button -----------------------------------------------------------------------------------


def test_the_reset_button_is_shown_only_to_staff(sam_client, alice_client, sam, alice):
    staff_chat, users_chat = chat_with_spending(sam), chat_with_spending(alice)

    staff_page = parse_html(sam_client.get(f"/c/{staff_chat.pk}/").content)
    users_page = parse_html(alice_client.get(f"/c/{users_chat.pk}/").content)

    form = staff_page.find("button", text="Reset chat").parent
    assert (form.tag, form.attrs["method"], form.attrs["action"]) == ("form", "post", reset_url(staff_chat))
    assert "csrfmiddlewaretoken" in form.form_data()
    assert not users_page.find_all("button", text="Reset chat")
    assert not users_page.find_all("form", action=reset_url(users_chat))


def test_staff_reset_empties_the_chat_and_keeps_the_spending(sam_client, sam):
    chat = chat_with_spending(sam)
    spent = spending(sam)
    assert len(shown_messages(sam_client, chat)) == 2

    response = sam_client.post(reset_url(chat))

    assert response.status_code == 302
    assert response["Location"] == f"/c/{chat.pk}/"
    assert shown_messages(sam_client, chat) == []
    page = parse_html(sam_client.get(f"/c/{chat.pk}/").content)
    assert page.find("p", class_="empty").text == "Send a message to start."
    assert page.find(id="rename-title").attrs["value"] == "Trip plans"  # the chat itself stays
    assert Conversation.objects.filter(pk=chat.pk, user=sam).exists()
    assert not Message.objects.filter(conversation=chat).exists()
    assert spending(sam) == spent
    assert UsageRecord.objects.get(user=sam).message is None
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_label, entry.action, entry.user) == (
        sam,
        "sam",
        AuditEntry.Action.CONVERSATION_RESET,
        sam,
    )
    assert f"conversation {chat.pk}" in entry.subject and "Trip plans" in entry.subject
    assert (entry.old_value, entry.new_value) == ("2 messages", "0 messages")


def test_with_htmx_the_page_reloads_to_show_the_empty_chat(sam_client, sam):
    chat = chat_with_spending(sam)

    response = sam_client.post(reset_url(chat), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Refresh"] == "true"
    assert not Message.objects.filter(conversation=chat).exists()


def test_a_user_who_is_not_staff_gets_403_and_nothing_changes(alice_client, alice):
    chat = chat_with_spending(alice)

    response = alice_client.post(reset_url(chat))

    assert response.status_code == 403
    assert len(shown_messages(alice_client, chat)) == 2
    assert not AuditEntry.objects.exists()


def test_staff_cannot_reset_another_users_chat_with_the_button(sam_client, alice):
    chat = chat_with_spending(alice)

    response = sam_client.post(reset_url(chat))

    assert response.status_code == 404
    assert Message.objects.filter(conversation=chat).count() == 2
    assert not AuditEntry.objects.exists()


def test_anonymous_is_sent_to_login(sam, catalog):
    chat = chat_with_spending(sam)

    response = Client().post(reset_url(chat))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert Message.objects.filter(conversation=chat).count() == 2


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_are_not_allowed(sam_client, sam, method):
    chat = chat_with_spending(sam)

    assert getattr(sam_client, method)(reset_url(chat)).status_code == 405
    assert Message.objects.filter(conversation=chat).count() == 2


def test_it_requires_the_csrf_token(sam, catalog):
    chat = chat_with_spending(sam)
    client = Client(enforce_csrf_checks=True)
    client.force_login(sam)
    form = parse_html(client.get(f"/c/{chat.pk}/").content).find("form", action=reset_url(chat))

    assert client.post(reset_url(chat)).status_code == 403
    assert Message.objects.filter(conversation=chat).count() == 2

    assert client.post(reset_url(chat), form.form_data()).status_code == 302
    assert not Message.objects.filter(conversation=chat).exists()


# -- The admin action -----------------------------------------------------------------------------


def test_the_admin_action_resets_the_selected_chats_of_any_user(admin_client, root, alice, bob):
    first, second, untouched = chat_with_spending(alice), chat_with_spending(bob), chat_with_spending(alice, "Other")
    spent = spending(alice), spending(bob)
    listing = parse_html(admin_client.get(CONVERSATIONS).content)
    assert listing.find("option", value="reset_conversations").text.startswith("Reset selected conversations")

    response = admin_client.post(
        CONVERSATIONS, {"action": "reset_conversations", "_selected_action": [first.pk, second.pk]}, follow=True
    )

    assert response.status_code == 200
    assert "Reset 2 conversations: 4 messages removed." in parse_html(response.content).text
    assert not Message.objects.filter(conversation__in=[first, second]).exists()
    assert Message.objects.filter(conversation=untouched).count() == 2
    assert Conversation.objects.count() == 3
    assert (spending(alice), spending(bob)) == spent
    assert sorted(AuditEntry.objects.values_list("actor__username", "user__username", "old_value")) == [
        ("root", "alice", "2 messages"),
        ("root", "bob", "2 messages"),
    ]
    assert all(entry.action == AuditEntry.Action.CONVERSATION_RESET for entry in AuditEntry.objects.all())


def test_staff_who_may_only_view_chats_cannot_reset_them(alice, catalog):
    chat = chat_with_spending(alice)
    viewer = User.objects.create_user("viewer", password=PASSWORD, is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    client = Client()
    client.force_login(viewer)
    assert client.get(CONVERSATIONS).status_code == 200

    listing = parse_html(client.get(CONVERSATIONS).content)
    client.post(CONVERSATIONS, {"action": "reset_conversations", "_selected_action": [chat.pk]})

    assert Message.objects.filter(conversation=chat).count() == 2
    assert not AuditEntry.objects.exists()
    assert not listing.find_all("option", value="reset_conversations")


# -- A reply being written, and open pages --------------------------------------------------------

LONG = [f"token{i} " for i in range(400)]


@pytest.fixture
def sam_async(sam, catalog) -> AsyncClient:
    client = AsyncClient()
    client.force_login(sam)
    return client


async def eventually(query):
    """The first row of query once there is one (within five seconds)."""
    for _ in range(100):
        if (row := await query.afirst()) is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("no row appeared within five seconds")


@pytest.mark.django_db(transaction=True)
async def test_a_reply_being_written_is_stopped_by_the_reset_and_its_spending_kept(sam_async, sam, upstream):
    upstream.script(Reply(chunks=LONG, first_delay=0.05, delay=0.02))
    await sam_async.post(START, {"text": "Write a lot"})
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).aget()
    watcher = await sam_async.get(f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")
    seen = ""
    async for chunk in watcher.streaming_content:
        seen += "".join(json.loads(data) for event, data, _ in parse_sse(chunk) if event == "delta")
        if len(seen) > 30:
            break

    response = await sam_async.post(f"/c/{reply.conversation_id}/reset/")

    assert response.status_code == 302
    await asyncio.to_thread(upstream.wait_for_disconnects, 1)  # no more tokens are paid for
    assert upstream.requests[0].chunks_sent < len(LONG)
    record = await eventually(UsageRecord.objects.filter(user=sam))
    assert record.kind == UsageRecord.Kind.REPLY
    assert record.message_id is None
    assert record.estimated  # a stream cut short sends no usage
    assert record.prompt_tokens > 0 and record.completion_tokens >= len(seen) // 4
    assert record.cost > 0
    daily = await DailyUsage.objects.aget(user=sam)
    assert (daily.tokens, daily.cost) == (record.prompt_tokens + record.completion_tokens, record.cost)
    assert not await Reservation.objects.filter(user=sam).aexists()  # nothing left held against the budget
    assert not await Message.objects.filter(conversation_id=reply.conversation_id).aexists()
    assert await Conversation.objects.filter(pk=reply.conversation_id).aexists()


@pytest.mark.django_db(transaction=True)
async def test_after_a_reset_the_next_message_starts_afresh(sam_async, upstream):
    upstream.script(Reply(text="Noted."), Reply(text="What word?"))
    await sam_async.post(START, {"text": "Remember the word banana"})
    first = await Message.objects.filter(role=Message.Role.ASSISTANT).aget()
    await watch_reply(sam_async, f"/c/{first.conversation_id}/messages/{first.pk}/stream/")
    await sam_async.post(f"/c/{first.conversation_id}/reset/")

    response = await sam_async.post(f"/c/{first.conversation_id}/messages/", {"text": "Which word was it?"})

    assert response.status_code == 302
    second = await Message.objects.filter(role=Message.Role.ASSISTANT).aget()
    _, status = await watch_reply(sam_async, f"/c/{first.conversation_id}/messages/{second.pk}/stream/")
    await second.arefresh_from_db()
    assert (second.content, status) == ("What word?", "complete")
    sent = upstream.requests[1].json["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == ["Which word was it?"]


async def open_page_events(client: AsyncClient, conversation: Conversation):
    """The chat page's event stream, once it is listening."""
    response = await client.get(f"/c/{conversation.pk}/events/")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    stream = aiter(response.streaming_content)
    assert await anext(stream) == b"retry: 1500\n\n"  # subscribed: what happens from now on reaches it
    return stream


async def next_events(stream) -> list[tuple[str, str, str | None]]:
    while not (events := parse_sse(await anext(stream))):
        pass  # a keep-alive comment
    return events


@pytest.mark.django_db(transaction=True)
async def test_an_open_chat_page_learns_of_the_reset(alice_async, alice, upstream):
    root = await User.objects.acreate_superuser("root", password=PASSWORD)
    chat = await sync_to_async(chat_with_spending)(alice)
    stream = await open_page_events(alice_async, chat)
    try:
        await sync_to_async(conversation_reset)(conversation=chat, actor=root)

        async with asyncio.timeout(5):
            assert await next_events(stream) == [("reset", "{}", None)]
    finally:
        await stream.aclose()


@pytest.mark.django_db(transaction=True)
async def test_an_open_chat_page_learns_of_a_reset_from_the_admin(alice_async, alice, upstream):
    root = await User.objects.acreate_superuser("root", password=PASSWORD)
    admin = Client()
    await sync_to_async(admin.force_login)(root)
    chat = await sync_to_async(chat_with_spending)(alice)
    other = await sync_to_async(chat_with_spending)(alice, "Other")
    stream = await open_page_events(alice_async, chat)
    other_stream = await open_page_events(alice_async, other)
    try:
        await sync_to_async(admin.post)(CONVERSATIONS, {"action": "reset_conversations", "_selected_action": [chat.pk]})

        async with asyncio.timeout(5):
            assert await next_events(stream) == [("reset", "{}", None)]
        with pytest.raises(TimeoutError):  # the chat that was not reset hears nothing
            async with asyncio.timeout(0.5):
                await next_events(other_stream)
    finally:
        await stream.aclose()
        await other_stream.aclose()


@pytest.mark.django_db(transaction=True)
async def test_another_users_chat_events_are_not_found(alice_async, bob, upstream):
    chat = await sync_to_async(chat_with_spending)(bob)

    response = await alice_async.get(f"/c/{chat.pk}/events/")

    assert response.status_code == 404


def test_resetting_an_empty_chat_is_harmless(sam_client, sam):
    chat = make_conversation(sam, title="Empty")

    assert sam_client.post(reset_url(chat)).status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.old_value, entry.new_value) == ("0 messages", "0 messages")
    assert Decimal(0) == usage_summary(user=sam).usd_this_month
