"""Versions and branches: regenerate, retry, edit and resend, continue, and picking which version shows.

POST /c/<id>/messages/<message>/regenerate/, /edit/, /continue/ and /show/. What
the model reads is checked in the fake upstream's request log: only the branch
on screen, never another version.
"""

import html
import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import AsyncClient, Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Reservation, UsageRecord, User
from conversations.branches import branch_messages
from conversations.models import ChatModel, Conversation, Message
from conversations.services.chats import message_send
from conversations.services.context import CONTINUE_PROMPT, SUMMARY_PREFIX, reply_plan
from conversations.services.versions import VersionRefused, message_edit, reply_regenerate, version_show
from tests.conftest import HTMX, make_conversation, make_message, sse_text_and_status, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


def url(message: Message, action: str = "") -> str:
    base = f"/c/{message.conversation_id}/messages/{message.pk}/"
    return f"{base}{action}/" if action else base


async def finished(client: AsyncClient, reply: Message) -> Message:
    """Watch the reply to its end, as the page does, and read it back."""
    await watch_reply(client, url(reply, "stream"))
    await reply.arefresh_from_db()
    return reply


async def newest_reply() -> Message:
    return await Message.objects.filter(role=Message.Role.ASSISTANT).alast()


async def chat_start(client: AsyncClient, text: str) -> Message:
    response = await client.post("/c/new/messages/", {"text": text})
    assert response.status_code == 302
    return await finished(client, await newest_reply())


async def chat_send(client: AsyncClient, reply: Message, text: str) -> Message:
    response = await client.post(f"/c/{reply.conversation_id}/messages/", {"text": text})
    assert response.status_code == 302
    return await finished(client, await newest_reply())


async def act(client: AsyncClient, message: Message, action: str, **data) -> Message:
    """Press a control on a message (htmx, as the page does); the reply it started, watched to its end."""
    response = await client.post(url(message, action), data, headers=HTMX)
    assert response.status_code == 200, response.content.decode()
    return await finished(client, await newest_reply())


async def on_screen(client: AsyncClient, conversation_id: int) -> list[tuple[str, str, str]]:
    """The chat page's messages as (role, text, "n / m" or ""), top to bottom."""
    response = await client.get(f"/c/{conversation_id}/")
    assert response.status_code == 200
    page = parse_html(response.content)
    shown = []
    for article in page.find("section", id="messages").find_all("article"):
        role = "user" if article.has_class("user") else "assistant"
        count = page.find(id=article.attrs["id"].replace("message-", "controls-")).find_all(class_="version-count")
        shown.append((role, article.find(class_="content").text, count[0].text if count else ""))
    return shown


def sent_turns(request) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.json["messages"]]


# -- Regenerate ------------------------------------------------------------------------------------


async def test_regenerate_makes_a_second_version_and_the_first_stays_reachable(alice_async, upstream):
    upstream.script(Reply(text="First answer."), Reply(text="Second answer."))
    first = await chat_start(alice_async, "Name a colour")

    second = await act(alice_async, first, "regenerate")

    assert second.content == "Second answer."
    assert await on_screen(alice_async, first.conversation_id) == [
        ("user", "Name a colour", ""),
        ("assistant", "Second answer.", "2 / 2"),
    ]
    # The model was asked again for the same branch: it never saw its first answer.
    assert sent_turns(upstream.requests[1]) == [("user", "Name a colour")]

    response = await alice_async.post(url(first, "show"), headers=HTMX)

    assert response.status_code == 200
    assert "First answer." in response.content.decode()
    # The choice is stored: a reload shows the first version.
    assert await on_screen(alice_async, first.conversation_id) == [
        ("user", "Name a colour", ""),
        ("assistant", "First answer.", "1 / 2"),
    ]


async def test_each_version_is_its_own_metered_call(alice_async, upstream):
    upstream.script(
        Reply(text="One.", prompt_tokens=100, completion_tokens=10),
        Reply(text="Two.", prompt_tokens=100, completion_tokens=20),
    )
    first = await chat_start(alice_async, "Count")

    second = await act(alice_async, first, "regenerate")

    records = [r async for r in UsageRecord.objects.order_by("created_at")]
    assert [(r.message_id, r.kind, r.prompt_tokens, r.completion_tokens) for r in records] == [
        (first.pk, "reply", 100, 10),
        (second.pk, "reply", 100, 20),
    ]
    # 100 in at $0.15/M and 20 out at $0.60/M, on the new version, settled: nothing is still held.
    assert (second.prompt_tokens, second.completion_tokens, second.cost) == (100, 20, Decimal("0.00002700"))
    assert not await Reservation.objects.aexists()


async def test_a_regenerate_past_the_daily_limit_says_so_and_calls_nobody(alice_async, alice, upstream):
    upstream.script(Reply(text="Fine.", prompt_tokens=50, completion_tokens=10))
    first = await chat_start(alice_async, "Hello")
    await User.objects.filter(pk=alice.pk).aupdate(tokens_per_day=70)

    response = await alice_async.post(url(first, "regenerate"), headers=HTMX)

    assert response.status_code == 200
    refused = await newest_reply()
    assert refused.pk != first.pk
    assert (refused.status, refused.error_code) == (Message.Status.ERROR, "tokens_per_day")
    assert html.escape(refused.error_text) in response.content.decode()
    assert len(upstream.requests) == 1
    await first.arefresh_from_db()
    assert (first.status, first.content) == (Message.Status.COMPLETE, "Fine.")


async def test_retry_after_a_failed_reply_answers_and_keeps_the_failed_one(alice_async, upstream):
    upstream.script(Reply(chunks=["Half ", "an ", "answer"], cut_after=2), Reply(text="A whole answer."))
    failed = await chat_start(alice_async, "Tell me")
    assert (failed.status, failed.content) == (Message.Status.ERROR, "Half an ")
    page = parse_html((await alice_async.get(f"/c/{failed.conversation_id}/")).content)
    assert page.find(id=f"controls-{failed.pk}").find("button", text="Retry")

    retried = await act(alice_async, failed, "regenerate")

    assert (retried.status, retried.content) == (Message.Status.COMPLETE, "A whole answer.")
    assert sent_turns(upstream.requests[1]) == [("user", "Tell me")]
    assert await on_screen(alice_async, failed.conversation_id) == [
        ("user", "Tell me", ""),
        ("assistant", "A whole answer.", "2 / 2"),
    ]


async def test_stop_ends_a_regenerated_reply_and_another_tab_watches_it(alice_async, alice, upstream):
    upstream.script(Reply(text="First."), Reply(chunks=[f"w{i} " for i in range(200)], delay=0.05))
    first = await chat_start(alice_async, "Go on and on")
    await alice_async.post(url(first, "regenerate"), headers=HTMX)
    regenerated = await newest_reply()
    other_tab = AsyncClient()
    await other_tab.aforce_login(alice)
    watcher = await other_tab.get(url(regenerated, "stream"))
    stream = aiter(watcher.streaming_content)
    seen = ""
    while len(seen) < len("w0 w1 w2 "):  # the other tab shows the reply being written
        seen += sse_text_and_status(await anext(stream))[0]

    stopped = await alice_async.post(url(regenerated, "stop"), headers=HTMX)
    rest, status = sse_text_and_status(b"".join([chunk async for chunk in stream]))

    assert stopped.status_code == 204
    assert status == Message.Status.STOPPED
    await regenerated.arefresh_from_db()
    assert regenerated.status == Message.Status.STOPPED
    assert seen.startswith("w0 w1 w2 ")
    assert regenerated.content == seen + rest
    assert len(regenerated.content.split()) < 200


# -- Edit ------------------------------------------------------------------------------------------


async def test_an_edit_starts_a_branch_and_the_model_reads_only_that_branch(alice_async, upstream):
    upstream.script(
        Reply(text="Lisbon is lovely."),
        Reply(text="Take the tram."),
        Reply(text="Porto is lovely."),
        Reply(text="Take the train."),
    )
    first_answer = await chat_start(alice_async, "Where to in May?")
    await chat_send(alice_async, first_answer, "How do I get around?")
    question = await Message.objects.filter(role=Message.Role.USER).afirst()

    edited_answer = await act(alice_async, question, "edit", text="Where to in June?")

    assert sent_turns(upstream.requests[2]) == [("user", "Where to in June?")]
    chat_id = question.conversation_id
    assert await on_screen(alice_async, chat_id) == [
        ("user", "Where to in June?", "2 / 2"),
        ("assistant", "Porto is lovely.", ""),
    ]

    await chat_send(alice_async, edited_answer, "How do I get around?")

    assert sent_turns(upstream.requests[3]) == [
        ("user", "Where to in June?"),
        ("assistant", "Porto is lovely."),
        ("user", "How do I get around?"),
    ]
    # The old branch, down to its end, is one press away.
    await alice_async.post(url(question, "show"), headers=HTMX)
    assert await on_screen(alice_async, chat_id) == [
        ("user", "Where to in May?", "1 / 2"),
        ("assistant", "Lisbon is lovely.", ""),
        ("user", "How do I get around?", ""),
        ("assistant", "Take the tram.", ""),
    ]


async def test_an_empty_edit_is_refused_and_nothing_is_stored(alice_async, upstream):
    answer = await chat_start(alice_async, "Hi")
    question = await Message.objects.filter(role=Message.Role.USER).afirst()

    response = await alice_async.post(url(question, "edit"), {"text": "   "}, headers=HTMX)

    assert response.status_code == 400
    assert "Type a message first." in response.content.decode()
    assert await Message.objects.acount() == 2
    await answer.arefresh_from_db()
    assert answer.content == "Hello from the fake upstream."


async def test_nothing_changes_while_a_reply_is_being_written(alice_async, upstream):
    upstream.script(Reply(text="slow", first_delay=1.0))
    await alice_async.post("/c/new/messages/", {"text": "Hi"})
    live = await newest_reply()
    question = await Message.objects.filter(role=Message.Role.USER).afirst()

    responses = [
        await alice_async.post(url(live, "regenerate"), headers=HTMX),
        await alice_async.post(url(question, "edit"), {"text": "Hello"}, headers=HTMX),
    ]

    assert [r.status_code for r in responses] == [409, 409]
    assert all("Wait for the reply to finish" in r.content.decode() for r in responses)
    assert await Message.objects.acount() == 2
    await finished(alice_async, live)


# -- Continue --------------------------------------------------------------------------------------


async def test_continue_appends_to_the_reply_cut_at_its_length_limit_as_a_call_of_its_own(alice_async, upstream):
    upstream.script(
        Reply(text="The first half", finish_reason="length", prompt_tokens=40, completion_tokens=4),
        Reply(text=" and the second half.", prompt_tokens=60, completion_tokens=5, first_delay=0.3),
    )
    cut = await chat_start(alice_async, "Write a long line")
    assert cut.finish_reason == "length"

    response = await alice_async.post(url(cut, "continue"), headers=HTMX)
    # A page showing the first half asks only for what follows it.
    text, status = await watch_reply(alice_async, f"{url(cut, 'stream')}?offset={len('The first half')}")

    assert response.status_code == 200
    assert (text, status) == (" and the second half.", Message.Status.COMPLETE)
    assert sent_turns(upstream.requests[1]) == [
        ("user", "Write a long line"),
        ("assistant", "The first half"),
        ("user", CONTINUE_PROMPT),
    ]
    await cut.arefresh_from_db()
    assert (cut.content, cut.finish_reason) == ("The first half and the second half.", "stop")
    assert await Message.objects.acount() == 2
    # Billed as two calls on the one reply: 100 in at $0.15/M, 9 out at $0.60/M.
    calls = [(r.prompt_tokens, r.completion_tokens) async for r in UsageRecord.objects.filter(message=cut)]
    assert sorted(calls) == [(40, 4), (60, 5)]
    assert (cut.prompt_tokens, cut.completion_tokens, cut.cost) == (100, 9, Decimal("0.00002040"))


async def test_a_continued_reply_whose_first_call_was_estimated_still_says_its_cost_is_estimated(alice_async, upstream):
    upstream.script(
        Reply(text="The first half", finish_reason="length", usage=False),  # counted from the text
        Reply(text=" and the second half.", prompt_tokens=60, completion_tokens=5, first_delay=0.3),
    )
    cut = await chat_start(alice_async, "Write a long line")
    assert cut.usage_estimated

    await alice_async.post(url(cut, "continue"), headers=HTMX)
    await watch_reply(alice_async, f"{url(cut, 'stream')}?offset={len('The first half')}")

    page = await alice_async.get(f"/c/{cut.conversation_id}/")
    await cut.arefresh_from_db()
    assert (cut.content, cut.usage_estimated) == ("The first half and the second half.", True)
    assert cut.completion_tokens > 5  # the estimate of the first half, and the upstream's 5
    assert "(estimated)" in parse_html(page.content).find("article", id=f"message-{cut.pk}").text


async def test_continue_past_the_daily_limit_is_refused_and_the_reply_stays(alice_async, alice, upstream):
    upstream.script(Reply(text="Cut here", finish_reason="length", prompt_tokens=50, completion_tokens=10))
    cut = await chat_start(alice_async, "Long please")
    await User.objects.filter(pk=alice.pk).aupdate(tokens_per_day=70)

    response = await alice_async.post(url(cut, "continue"), headers=HTMX)

    assert response.status_code == 429
    assert "tokens" in response.content.decode()
    await cut.arefresh_from_db()
    assert (cut.status, cut.content, cut.finish_reason) == (Message.Status.COMPLETE, "Cut here", "length")
    assert len(upstream.requests) == 1
    assert not await Reservation.objects.aexists()


async def test_only_a_reply_cut_at_its_length_limit_can_be_continued(alice_async, upstream):
    whole = await chat_start(alice_async, "Hi")

    response = await alice_async.post(url(whole, "continue"), headers=HTMX)

    assert response.status_code == 400
    assert "length limit" in response.content.decode()
    assert len(upstream.requests) == 1


# -- The view checklist ----------------------------------------------------------------------------

ACTIONS = ["regenerate", "edit", "continue", "show"]


@pytest.fixture
def answered(alice, catalog) -> Message:
    """Alice's chat with one question and its answer, written through the service."""
    model = ChatModel.objects.get(model_id="gpt-4o-mini")
    reply, _ = message_send(user=alice, conversation=None, text="Hi", model=model)
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE, content="Hello.")
    return reply


@pytest.mark.parametrize("action", ACTIONS)
def test_another_users_message_is_not_found(action, answered, bob):
    client = Client()
    client.force_login(bob)

    response = client.post(url(answered, action), {"text": "mine now"}, headers=HTMX)

    assert response.status_code == 404
    assert Message.objects.count() == 2


@pytest.mark.parametrize("action", ACTIONS)
def test_anonymous_is_sent_to_login(action, answered):
    response = Client().post(url(answered, action))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("action", ACTIONS)
def test_get_is_not_allowed(action, answered, alice_client):
    assert alice_client.get(url(answered, action)).status_code == 405


@pytest.mark.parametrize("action", ACTIONS)
def test_the_csrf_token_is_required(action, answered, alice_csrf_client):
    response = alice_csrf_client.post(url(answered, action), {"text": "x"}, headers=HTMX)

    assert response.status_code == 403
    assert Message.objects.count() == 2


def test_without_javascript_a_control_redirects_to_the_chat(answered, alice_client):
    answered.refresh_from_db()
    second, _ = reply_regenerate(reply=answered, user=answered.user)
    Message.objects.filter(pk=second.pk).update(status=Message.Status.COMPLETE)

    response = alice_client.post(url(answered, "show"))

    assert response.status_code == 302
    assert response["Location"] == f"/c/{answered.conversation_id}/"
    assert Conversation.objects.get().leaf_id == answered.pk


def test_a_finished_reply_gets_its_controls_alone(answered, alice_client):
    response = alice_client.get(url(answered, "controls"), headers=HTMX)

    assert response.status_code == 200
    controls = parse_html(response.content).find(id=f"controls-{answered.pk}")
    assert [button.text for button in controls.find_all("button")] == ["Regenerate"]
    assert alice_client.post(url(answered, "controls"), headers=HTMX).status_code == 405
    assert alice_client.get(url(answered, "controls"))["Location"].endswith(f"#message-{answered.pk}")


def test_controls_of_another_users_message_are_not_found(answered, bob):
    client = Client()
    client.force_login(bob)

    assert client.get(url(answered, "controls"), headers=HTMX).status_code == 404


def test_htmx_gets_only_the_branch(answered, alice_client):
    response = alice_client.post(url(answered, "show"), headers=HTMX)

    assert response.status_code == 200
    assert b"<html" not in response.content
    articles = parse_html(response.content).find_all("article")
    assert [a.attrs["id"] for a in articles] == [f"message-{answered.parent_id}", f"message-{answered.pk}"]


# -- The branch on screen, for every sequence of changes --------------------------------------------

Text = st.text(alphabet="ab é😀", min_size=1, max_size=8)
Step = st.one_of(
    st.tuples(st.just("send"), Text),
    st.tuples(st.just("regenerate"), st.integers(0, 50)),
    st.tuples(st.just("edit"), st.integers(0, 50), Text),
    st.tuples(st.just("show"), st.integers(0, 500)),
)


def sent_turns_of(plan) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in plan.messages]


def finish(reply: Message) -> None:
    """The reply is written (what the reply runner does), so the chat takes the next change."""
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.COMPLETE, content=f"answer {reply.pk}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(Step, min_size=1, max_size=12))
@pytest.mark.django_db(transaction=False)
def test_the_model_always_reads_exactly_the_branch_on_screen(alice, catalog, steps):
    model = ChatModel.objects.get(model_id="gpt-4o-mini")
    reply, _ = message_send(user=alice, conversation=None, text="start", model=model)
    finish(reply)
    conversation = reply.conversation
    for step in steps:
        conversation.refresh_from_db()
        branch = branch_messages(conversation)
        if step[0] == "send":
            reply, _ = message_send(user=alice, conversation=conversation, text=step[1], model=model)
        elif step[0] == "regenerate":
            replies = [m for m in branch if m.role == Message.Role.ASSISTANT]
            reply, _ = reply_regenerate(reply=replies[step[1] % len(replies)], user=alice)
        elif step[0] == "edit":
            questions = [m for m in branch if m.role == Message.Role.USER]
            reply, _ = message_edit(message=questions[step[1] % len(questions)], user=alice, text=step[2])
        else:
            everything = list(Message.objects.filter(conversation=conversation).order_by("pk"))
            chosen = everything[step[1] % len(everything)]
            version_show(message=chosen)
            conversation.refresh_from_db()
            assert chosen in branch_messages(conversation)  # every version can be brought on screen
            continue
        finish(reply)
        conversation.refresh_from_db()
        branch = branch_messages(conversation)
        # A branch is a path: it starts at the first message, each follows the one above, user and reply in turn.
        assert branch[0].parent_id is None and branch[-1].pk == reply.pk
        assert all(later.parent_id == earlier.pk for earlier, later in itertools.pairwise(branch))
        assert [m.role for m in branch] == ["user", "assistant"] * (len(branch) // 2)
        # What a new reply would be sent: the branch on screen, word for word, nothing from other versions.
        upto_reply = Message.objects.select_related("conversation", "model").get(pk=reply.pk)
        assert [(m["role"], m["content"]) for m in reply_plan(reply=upto_reply).messages] == [
            (m.role, m.content) for m in branch[:-1]
        ]


def test_a_summary_is_sent_only_on_the_branch_it_summarises(alice, catalog):
    chat = make_conversation(alice, model=ChatModel.objects.get(model_id="gpt-4o-mini"))
    first, _, second, _ = [
        make_message(chat, role, text)
        for role, text in [("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2")]
    ]
    Conversation.objects.filter(pk=chat.pk).update(summary="They met.", summary_upto=first.pk + 1)

    reply, plan = message_edit(message=second, user=alice, text="Q2 again")
    assert sent_turns_of(plan) == [("system", f"{SUMMARY_PREFIX}They met."), ("user", "Q2 again")]
    finish(reply)

    _, plan = message_edit(message=first, user=alice, text="Q1 again")

    assert sent_turns_of(plan) == [("user", "Q1 again")]


def test_a_change_to_a_chat_whose_reply_is_pending_is_refused(answered):
    Message.objects.filter(pk=answered.pk).update(status=Message.Status.STREAMING)

    with pytest.raises(VersionRefused, match="Wait for the reply"):
        version_show(message=answered)


# -- Existing chats ----------------------------------------------------------------------------------


def test_existing_chats_become_one_branch_ending_at_their_newest_message(alice, catalog):
    executor = MigrationExecutor(connection)
    before = [("conversations", "0008_seed_gpt_realtime_2")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldConversation, OldMessage = (
        old.get_model("conversations", "Conversation"),
        old.get_model("conversations", "Message"),
    )
    model_id = ChatModel.objects.get(model_id="gpt-4o-mini").pk
    chat = OldConversation.objects.create(user_id=alice.pk, model_id=model_id)
    empty = OldConversation.objects.create(user_id=alice.pk, model_id=model_id)
    now = timezone.now()
    # Written out of order, as rows of a busy site may be: their times say the order.
    times = [now.replace(microsecond=0) - timedelta(minutes=m) for m in (1, 4, 2, 3)]
    for role, at in zip(["assistant", "user", "user", "assistant"], times, strict=True):
        OldMessage.objects.create(conversation_id=chat.pk, user_id=alice.pk, role=role, content=role, created_at=at)

    call_command("migrate", "conversations", verbosity=0)

    in_order = list(Message.objects.filter(conversation_id=chat.pk).order_by("created_at"))
    assert [m.parent_id for m in in_order] == [None, *(m.pk for m in in_order[:-1])]
    assert Conversation.objects.get(pk=chat.pk).leaf_id == in_order[-1].pk
    assert Conversation.objects.get(pk=empty.pk).leaf_id is None
