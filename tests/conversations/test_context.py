"""What history goes upstream: trimmed to the model's context window, the rest summarised, retried shorter once.

The catalog's GPT-4o mini is narrowed with an ORM update so a few turns fill
it. The site counts a prompt generously, about three characters a token plus
a few for each message's framing (estimate_prompt_tokens), and keeps room for
max_tokens (4,096 here) in the window. With a window of 4,096 + 350 tokens,
the system prompt "Be brief.", a short new message and turns of 300
characters (about 107 tokens each), the three newest turns fit and the fourth
does not.
"""

from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db.models import F

from accounts.billing.budget import usage_summary
from accounts.models import DailyUsage, Reservation, UsageRecord, User
from conversations.models import ChatModel, Conversation, Message
from conversations.services.context import SUMMARY_MAX_TOKENS, SUMMARY_PREFIX, context_tokens
from tests.conftest import HTMX, make_conversation, make_message, watch_reply
from tests.fake_upstream import Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = {"role": "system", "content": "Be brief."}
MAX_TOKENS = 4096
SUMMARY = "They planned a trip to Lisbon in May."


def turn_text(n: int) -> str:
    """Turn n of the stored history: 300 characters, easy to tell apart."""
    return f"[turn {n}] " + ("We talk about the trip, the trains and the hotels. " * 10)[: 300 - len(f"[turn {n}] ")]


def turn(n: int) -> dict:
    return {"role": "user" if n % 2 else "assistant", "content": turn_text(n)}


@pytest.fixture(autouse=True)
def summaries_by_the_chats_own_model(settings):
    settings.SUMMARY_MODEL = ""


@pytest.fixture
def chat(alice, catalog) -> Conversation:
    """Alice's chat with a system prompt and eight turns of 300 characters: user, assistant, user, ..."""
    conversation = make_conversation(
        alice, model=ChatModel.objects.get(model_id="gpt-4o-mini"), system_prompt=SYSTEM["content"]
    )
    for n in range(1, 9):
        make_message(conversation, turn(n)["role"], turn_text(n))
    return conversation


def narrow_window(extra: int) -> None:
    """GPT-4o mini reads max_tokens plus `extra` tokens at most, plus the room kept for a summary."""
    ChatModel.objects.filter(model_id="gpt-4o-mini").update(
        context_window=F("max_output_tokens") + extra + SUMMARY_MAX_TOKENS
    )


async def send(client, chat: Conversation, text: str) -> Message:
    response = await client.post(f"/c/{chat.pk}/messages/", {"text": text})
    assert response.status_code == 302
    reply = await Message.objects.filter(role=Message.Role.ASSISTANT).alast()
    await watch_reply(client, f"/c/{chat.pk}/messages/{reply.pk}/stream/")
    await reply.arefresh_from_db()
    return reply


def streamed(request) -> bool:
    return request.json.get("stream") is True


def summary_message(text: str = SUMMARY) -> dict:
    return {"role": "system", "content": SUMMARY_PREFIX + text}


async def test_old_turns_are_left_out_and_summarised_the_system_prompt_kept(alice_async, chat, upstream):
    await sync_to_async(narrow_window)(350)
    upstream.script(Reply(text=SUMMARY), Reply(text="Fine."))

    reply = await send(alice_async, chat, "Next?")

    assert reply.status == Message.Status.COMPLETE
    summary_call, reply_call = upstream.requests
    # First the summary of the turns that no longer fit, asked for without streaming...
    assert not streamed(summary_call)
    transcript = summary_call.json["messages"][-1]["content"]
    assert all(turn_text(n) in transcript for n in range(1, 6))
    assert not any(turn_text(n) in transcript for n in range(6, 9))
    # ...then the reply: the system prompt, the summary, and the newest turns that fit.
    assert streamed(reply_call)
    assert reply_call.json["messages"] == [
        SYSTEM,
        summary_message(),
        turn(6),
        turn(7),
        turn(8),
        {"role": "user", "content": "Next?"},
    ]
    assert reply_call.json["max_tokens"] == MAX_TOKENS
    await chat.arefresh_from_db()
    assert chat.summary == SUMMARY


async def test_a_turn_whose_old_turns_are_summarised_first_is_answered_before_the_summary_is_written(
    alice_async, chat, upstream
):
    """The sent turn is shown while the provider writes the summary, not once it has (seconds on a long chat)."""
    await sync_to_async(narrow_window)(350)
    upstream.script(Reply(text=SUMMARY, first_delay=1.0), Reply(chunks=["Fine", "."]))

    response = await alice_async.post(
        f"/c/{chat.pk}/messages/", {"text": "Next?"}, headers=HTMX | {"Accept": "text/event-stream"}
    )
    events = aiter(response.streaming_content)
    first = await anext(events)

    assert first.startswith(b"event: turn") and b"Next?" in first
    assert not any(streamed(request) for request in upstream.requests)  # the reply's call waits for the summary
    rest = b"".join([chunk async for chunk in events])
    assert b"Fine" in rest and b"event: done" in rest
    assert [streamed(request) for request in upstream.requests] == [False, True]


async def test_the_summary_is_billed_to_the_user(alice_async, alice, chat, upstream):
    await sync_to_async(narrow_window)(350)
    upstream.script(
        Reply(text=SUMMARY, prompt_tokens=600, completion_tokens=12),
        Reply(text="Fine.", prompt_tokens=400, completion_tokens=2),
    )

    reply = await send(alice_async, chat, "Next?")

    mini = await ChatModel.objects.aget(model_id="gpt-4o-mini")
    summary = await UsageRecord.objects.aget(kind=UsageRecord.Kind.SUMMARY)
    assert (summary.user_id, summary.model_id) == (alice.pk, mini.pk)
    assert (summary.prompt_tokens, summary.completion_tokens) == (600, 12)
    assert summary.cost == mini.cost(prompt_tokens=600, completion_tokens=12) == Decimal("0.0000972")
    assert (reply.prompt_tokens, reply.completion_tokens) == (400, 2)
    used = await sync_to_async(usage_summary)(user=alice)
    assert used.tokens_today == 600 + 12 + 400 + 2
    assert used.usd_this_month == summary.cost + reply.cost
    rollup = await DailyUsage.objects.aget(user=alice)
    assert (rollup.calls, rollup.tokens, rollup.cost) == (2, used.tokens_today, used.usd_this_month)
    assert not await Reservation.objects.aexists()


async def test_the_next_turn_reuses_the_stored_summary(alice_async, chat, upstream):
    # Room for the summary, the three turns kept and the next exchange: nothing more falls out.
    await sync_to_async(narrow_window)(430)
    upstream.script(Reply(text=SUMMARY), Reply(text="Fine."), Reply(text="Sure."))

    await send(alice_async, chat, "Next?")
    second = await send(alice_async, chat, "And then?")

    assert second.status == Message.Status.COMPLETE
    assert [streamed(request) for request in upstream.requests] == [False, True, True]
    assert upstream.requests[2].json["messages"] == [
        SYSTEM,
        summary_message(),
        turn(6),
        turn(7),
        turn(8),
        {"role": "user", "content": "Next?"},
        {"role": "assistant", "content": "Fine."},
        {"role": "user", "content": "And then?"},
    ]


async def test_turns_that_fall_out_later_are_added_to_the_summary(alice_async, chat, upstream):
    await sync_to_async(narrow_window)(350)
    later = "They planned a trip to Lisbon in May, by train."
    upstream.script(Reply(text=SUMMARY), Reply(text="Fine."), Reply(text=later), Reply(text="Sure."))

    await send(alice_async, chat, "Next?")
    await sync_to_async(narrow_window)(-100)  # now even turns 6 to 8 no longer fit beside a summary
    second = await send(alice_async, chat, "And then?")

    assert second.status == Message.Status.COMPLETE
    assert [streamed(request) for request in upstream.requests] == [False, True, False, True]
    transcript = upstream.requests[2].json["messages"][-1]["content"]
    assert SUMMARY in transcript  # the earlier summary is carried into the new one
    assert all(turn_text(n) in transcript for n in (6, 7, 8)) and "Fine." in transcript
    assert turn_text(5) not in transcript  # already in the earlier summary
    assert upstream.requests[3].json["messages"] == [
        SYSTEM,
        summary_message(later),
        {"role": "user", "content": "And then?"},
    ]
    await chat.arefresh_from_db()
    assert chat.summary == later


async def test_when_the_summary_fails_the_reply_goes_without_the_old_turns(
    alice_async, alice, chat, upstream, settings
):
    settings.UPSTREAM_RETRIES = 0
    await sync_to_async(narrow_window)(350)
    upstream.script(Status.server_error(500), Reply(text="Fine."))

    reply = await send(alice_async, chat, "Next?")

    assert reply.status == Message.Status.COMPLETE and reply.error_text == ""
    assert [streamed(request) for request in upstream.requests] == [False, True]
    sent = upstream.requests[1].json["messages"]
    assert sent == [SYSTEM, turn(6), turn(7), turn(8), {"role": "user", "content": "Next?"}]
    assert context_tokens(sent) + upstream.requests[1].json["max_tokens"] <= MAX_TOKENS + 350
    await chat.arefresh_from_db()
    assert chat.summary == ""
    assert not await UsageRecord.objects.filter(kind=UsageRecord.Kind.SUMMARY).aexists()
    assert not await Reservation.objects.aexists()


async def test_without_budget_for_the_summary_the_reply_goes_without_the_old_turns(alice_async, alice, chat, upstream):
    await sync_to_async(narrow_window)(350)
    # Only output costs: a cent a token. The reply may use up to 100 tokens ($1.00) of Alice's $1.50,
    # which leaves 50 tokens' worth: less than any call is let through with.
    await ChatModel.objects.filter(model_id="gpt-4o-mini").aupdate(input_price=0, output_price=10_000)
    await User.objects.filter(pk=alice.pk).aupdate(usd_per_month=Decimal("1.50"), max_tokens_per_request=100)
    upstream.script(Reply(text="Fine.", prompt_tokens=400, completion_tokens=2))

    reply = await send(alice_async, chat, "Next?")

    assert reply.status == Message.Status.COMPLETE
    assert len(upstream.requests) == 1 and streamed(upstream.requests[0])
    assert upstream.requests[0].json["messages"] == [
        SYSTEM,
        turn(6),
        turn(7),
        turn(8),
        {"role": "user", "content": "Next?"},
    ]
    assert upstream.requests[0].json["max_tokens"] == 100
    assert not await UsageRecord.objects.filter(kind=UsageRecord.Kind.SUMMARY).aexists()
    assert not await Reservation.objects.aexists()


async def test_the_system_prompt_and_the_new_message_go_even_when_nothing_else_fits(alice_async, chat, upstream):
    await sync_to_async(narrow_window)(20)
    upstream.script(Reply(text=SUMMARY), Reply(text="Fine."))
    long_question = turn_text(9)

    reply = await send(alice_async, chat, long_question)

    assert reply.status == Message.Status.COMPLETE
    assert upstream.requests[1].json["messages"] == [
        SYSTEM,
        summary_message(),
        {"role": "user", "content": long_question},
    ]


async def test_when_the_upstream_says_the_chat_is_too_long_it_retries_once_with_fewer_turns(
    alice_async, alice, chat, upstream
):
    upstream.script(Status.context_length_exceeded(), Reply(text="Done.", prompt_tokens=300, completion_tokens=1))

    reply = await send(alice_async, chat, "Next?")

    assert (reply.status, reply.content, reply.error_text) == (Message.Status.COMPLETE, "Done.", "")
    first, retry = (request.json["messages"] for request in upstream.requests)
    assert [streamed(request) for request in upstream.requests] == [True, True]
    assert first == [SYSTEM, *(turn(n) for n in range(1, 9)), {"role": "user", "content": "Next?"}]
    # The system prompt kept; the newest turns, fewer of them.
    assert retry[0] == SYSTEM
    assert 1 <= len(retry) - 1 < len(first) - 1
    assert retry[1:] == first[len(first) - len(retry) + 1 :]
    assert (reply.prompt_tokens, reply.completion_tokens) == (300, 1)
    assert not await Reservation.objects.aexists()
    assert await UsageRecord.objects.filter(message=reply).acount() == 1
