"""Per-user limits, enforced before every upstream call: reserve the worst case, settle the real use, never leak.

Limits are tokens per day, US dollars per month, a cap on max_tokens per
request and the models a user may pick; the site's QUOTA_* settings apply to
users without their own. Budgets are held in PostgreSQL, so parallel requests
are checked here with real threads and real connections.
"""

import asyncio
import html
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, F, Sum
from django.utils import timezone

from accounts.billing.budget import MIN_REPLY_TOKENS, Grant, QuotaExceeded, budget_reserve, budget_settle, usage_summary
from accounts.billing.prompt_bound import estimate_tokens, prompt_tokens_bound
from accounts.models import DailyUsage, Reservation, UsageRecord, User
from accounts.services import limits_set
from conversations.models import ChatModel, Conversation, Message
from conversations.services.replies import INTERRUPTED_TEXT
from tests.conftest import HTMX, make_conversation, make_message, watch_reply
from tests.dom import parse_html
from tests.fake_upstream import Hang, Refuse, Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

# The prompt tokens reserved for "Hi" as the first message of a chat (the site's generous estimate).
HI_PROMPT = prompt_tokens_bound([{"role": "user", "content": "Hi"}])
MODEL_MAX_TOKENS = 4096  # the seeded catalog's max_output_tokens for the GPT models
LONG = [f"token{i} " for i in range(400)]
# A frozen afternoon, 5 h 30 min before the day ends in UTC.
AFTERNOON = datetime(2026, 6, 15, 18, 30, tzinfo=UTC)


# -- Helpers ------------------------------------------------------------------------------


def stream_url(reply: Message) -> str:
    return f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/"


async def latest_reply() -> Message:
    return await Message.objects.filter(role=Message.Role.ASSISTANT).alast()


async def send(client, text: str = "Hi", **data) -> Message:
    """Start a new chat with `text`; returns its reply."""
    response = await client.post("/c/new/messages/", {"text": text, **data})
    assert response.status_code == 302, response.content
    return await latest_reply()


async def send_and_finish(client, text: str = "Hi", **data) -> Message:
    reply = await send(client, text, **data)
    await watch_reply(client, stream_url(reply))
    await reply.arefresh_from_db()
    return reply


async def eventually(check) -> None:
    """Wait until `check()` (a plain function) is true, for five seconds at most."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


def spend(
    user: User,
    model_id: str = "gpt-4o-mini",
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    reservation_id: int | None = None,
):
    """Usage of the user's, settled now (in place of its reservation, if given)."""
    return budget_settle(
        reservation_id=reservation_id,
        user_id=user.pk,
        model=ChatModel.objects.get(model_id=model_id),
        kind=UsageRecord.Kind.REPLY,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )


async def set_limits(user: User, **limits) -> None:
    await User.objects.filter(pk=user.pk).aupdate(**limits)


def assert_books_balance(user: User, *replies: Message) -> None:
    """No budget is held any more, each reply's ledger row says what the reply says, and the rollup adds up."""
    assert list(Reservation.objects.filter(user=user)) == []
    for reply in replies:
        reply.refresh_from_db()
        record = UsageRecord.objects.get(message=reply)
        assert (record.kind, record.prompt_tokens, record.completion_tokens, record.cost, record.estimated) == (
            UsageRecord.Kind.REPLY,
            reply.prompt_tokens,
            reply.completion_tokens,
            reply.cost,
            reply.usage_estimated,
        )
    ledger = UsageRecord.objects.filter(user=user).aggregate(
        calls=Count("id"), tokens=Sum(F("prompt_tokens") + F("completion_tokens")), cost=Sum("cost")
    )
    rollup = DailyUsage.objects.filter(user=user).aggregate(calls=Sum("calls"), tokens=Sum("tokens"), cost=Sum("cost"))
    assert {key: value or 0 for key, value in rollup.items()} == {key: value or 0 for key, value in ledger.items()}


def frozen_at(moment: datetime):
    return time_machine.travel(moment, tick=False)


@pytest.fixture
def only_mini(alice, mini):
    """An admin has allowed Alice GPT-4o mini only."""
    alice.allowed_models.set([mini])


# -- Limits and the site's defaults --------------------------------------------------------


def budget_limits(user: User) -> tuple:
    limits = user.limits()
    return limits.tokens_per_day, limits.usd_per_month, limits.max_tokens_per_request


def test_users_without_limits_of_their_own_get_the_sites_defaults(settings, alice, bob):
    settings.QUOTA_TOKENS_PER_DAY = 50_000
    settings.QUOTA_USD_PER_MONTH = Decimal("5.00")
    settings.QUOTA_MAX_TOKENS_PER_REQUEST = 800
    limits_set(user=bob, actor=None, actor_label="test", tokens_per_day=1000, usd_per_month=Decimal("1.50"))
    bob.refresh_from_db()

    assert budget_limits(alice) == (50_000, Decimal("5.00"), 800)
    assert budget_limits(bob) == (1000, Decimal("1.50"), 800)

    limits_set(user=bob, actor=None, actor_label="test", tokens_per_day=None)
    bob.refresh_from_db()
    assert bob.limits().tokens_per_day == 50_000


def test_without_any_limit_nothing_is_held_back(settings, alice, mini):
    settings.QUOTA_TOKENS_PER_DAY = settings.QUOTA_USD_PER_MONTH = settings.QUOTA_MAX_TOKENS_PER_REQUEST = None
    spend(alice, prompt_tokens=5_000_000, completion_tokens=5_000_000)

    grant = budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100_000, max_tokens=16_000)

    assert grant.max_tokens == 16_000


# -- Parallel requests can never spend past a limit ---------------------------------------

THREADS = 200


def free_connections() -> int:
    """How many more connections PostgreSQL accepts from us now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize("limit", ["tokens_per_day", "usd_per_month"])
def test_of_200_reservations_released_at_once_against_room_for_one_exactly_one_is_granted(alice, catalog, limit):
    gpt4o = ChatModel.objects.get(model_id="gpt-4o")
    # One call of 100 prompt tokens and up to 900 out fits; a second does not (not even MIN_REPLY_TOKENS of it).
    if limit == "tokens_per_day":
        User.objects.filter(pk=alice.pk).update(tokens_per_day=1000)
    else:  # $0.00925 at GPT-4o's prices; of $0.01 that leaves $0.0005 after the next prompt: 50 tokens
        User.objects.filter(pk=alice.pk).update(usd_per_month=Decimal("0.01"))
    # Each thread holds its own connection at once: as many as PostgreSQL lets us have, up to 200.
    threads = min(THREADS, free_connections() - 5)
    assert threads >= 150, f"PostgreSQL has room for {threads} more connections only; raise max_connections"
    barrier = threading.Barrier(threads, timeout=30)

    def attempt(_) -> Grant | QuotaExceeded:
        try:
            connection.ensure_connection()
            barrier.wait()  # all connected: go
            return budget_reserve(user_id=alice.pk, model=gpt4o, prompt_tokens=100, max_tokens=900)
        except QuotaExceeded as refused:
            return refused
        except BaseException:
            barrier.abort()
            raise
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(attempt, range(threads)))

    granted = [result for result in results if isinstance(result, Grant)]
    refused = [result for result in results if isinstance(result, QuotaExceeded)]
    assert len(granted) == 1
    assert len(refused) == threads - 1
    assert {refusal.code for refusal in refused} == {limit}
    held = Reservation.objects.get()
    assert held.pk == granted[0].reservation_id
    assert held.tokens <= 1000 and held.cost <= Decimal("0.01")


async def test_of_20_messages_sent_at_once_against_room_for_one_only_one_reaches_the_upstream(
    alice_async, alice, upstream, settings
):
    settings.RATELIMIT_MESSAGES = "off"
    await set_limits(alice, tokens_per_day=550)
    # The reply that goes really uses the whole day's tokens, however soon it ends.
    upstream.script(Reply(text="Only this one.", prompt_tokens=500, completion_tokens=50))

    responses = await asyncio.gather(
        *(alice_async.post("/c/new/messages/", {"text": "Hi"}, headers=HTMX) for _ in range(20))
    )

    replies = [reply async for reply in Message.objects.filter(role=Message.Role.ASSISTANT)]
    going = [reply for reply in replies if reply.error_code != "tokens_per_day"]
    assert len(going) == 1
    _, status = await watch_reply(alice_async, stream_url(going[0]))
    assert status == Message.Status.COMPLETE
    assert len(upstream.requests) == 1
    assert [response.status_code for response in responses] == [200] * 20
    told = [r for r in responses if "You have used your 550 tokens for today." in r.content.decode()]
    assert len(told) == 19
    assert await Message.objects.filter(role=Message.Role.USER, content="Hi").acount() == 20
    assert (await sync_to_async(usage_summary)(user=alice)).tokens_today == 550
    await sync_to_async(assert_books_balance)(alice, going[0])


# -- Reservations hold the worst case, and never leak ---------------------------------------


async def test_a_reply_in_flight_holds_its_worst_case_until_it_settles(alice_async, alice, mini, upstream):
    first_prompt = prompt_tokens_bound([{"role": "user", "content": "First"}])
    await set_limits(alice, tokens_per_day=first_prompt + MODEL_MAX_TOKENS + HI_PROMPT + 100)
    upstream.script(
        Reply(text="Slow answer.", first_delay=10),
        Reply(text="Quick.", prompt_tokens=5, completion_tokens=1),
        Reply(text="Full."),
    )
    first = await send(alice_async, "First")
    await asyncio.to_thread(upstream.wait_for_requests, 1)

    held = await Reservation.objects.aget()
    second = await send_and_finish(alice_async, "Hi")  # while the first is still being written
    await alice_async.post(f"/c/{first.conversation_id}/messages/{first.pk}/stop/")
    await watch_reply(alice_async, stream_url(first))
    third = await send_and_finish(alice_async, "Hi")

    # The prompt's estimate plus the whole max_tokens, at the model's prices.
    assert (held.message_id, held.tokens) == (first.pk, first_prompt + MODEL_MAX_TOKENS)
    assert held.cost == mini.cost(prompt_tokens=first_prompt, completion_tokens=MODEL_MAX_TOKENS)
    assert (second.status, third.status) == (Message.Status.COMPLETE, Message.Status.COMPLETE)
    assert [request.json["max_tokens"] for request in upstream.requests] == [MODEL_MAX_TOKENS, 100, MODEL_MAX_TOKENS]
    await sync_to_async(assert_books_balance)(alice, first, second, third)


async def test_a_finished_reply_is_settled_to_its_real_usage_freeing_the_rest(alice_async, alice, upstream):
    # Room for one full reservation (prompt + 4096) only, until the first reply settles to what it really used.
    await set_limits(alice, tokens_per_day=HI_PROMPT + MODEL_MAX_TOKENS + 100)
    upstream.script(
        Reply(text="Short answer.", prompt_tokens=20, completion_tokens=3), Reply(text="Another short answer.")
    )

    first = await send_and_finish(alice_async)
    second = await send_and_finish(alice_async)

    assert (first.status, second.status) == (Message.Status.COMPLETE, Message.Status.COMPLETE)
    assert (first.prompt_tokens, first.completion_tokens) == (20, 3)
    assert [request.json["max_tokens"] for request in upstream.requests] == [MODEL_MAX_TOKENS, MODEL_MAX_TOKENS]
    await sync_to_async(assert_books_balance)(alice, first, second)


async def test_a_stopped_reply_holds_nothing_and_is_billed_what_it_says(alice_async, alice, upstream):
    upstream.script(Reply(chunks=LONG, delay=0.02))
    reply = await send(alice_async, "Write a lot")
    await eventually(lambda: upstream.requests and upstream.requests[0].chunks_sent >= 5)

    await alice_async.post(f"/c/{reply.conversation_id}/messages/{reply.pk}/stop/", headers=HTMX)

    _, status = await watch_reply(alice_async, stream_url(reply))
    await reply.arefresh_from_db()
    assert status == Message.Status.STOPPED
    assert reply.usage_estimated and reply.completion_tokens > 0 and reply.cost > 0
    await sync_to_async(assert_books_balance)(alice, reply)


@pytest.mark.parametrize(
    "failure",
    [Status.invalid_api_key(), Status.server_error(503), Refuse(), Hang(5)],
    ids=["rejected-key", "server-error", "connection-dropped", "no-answer"],
)
async def test_a_reply_that_fails_before_any_token_holds_and_costs_nothing(
    alice_async, alice, upstream, settings, failure
):
    settings.UPSTREAM_RETRIES = 0
    settings.UPSTREAM_READ_TIMEOUT = 0.3
    # Room for exactly one full reply today.
    await set_limits(alice, tokens_per_day=HI_PROMPT + MODEL_MAX_TOKENS)
    upstream.script(failure, Reply(text="Second try works."))

    failed = await send_and_finish(alice_async)
    retried = await send_and_finish(alice_async)

    assert failed.status == Message.Status.ERROR
    assert (failed.prompt_tokens, failed.completion_tokens, failed.cost) == (0, 0, Decimal(0))
    assert not await UsageRecord.objects.filter(message=failed).aexists()
    # Nothing was held back or billed for it: the next message gets the whole day.
    assert retried.status == Message.Status.COMPLETE
    assert upstream.requests[-1].json["max_tokens"] == MODEL_MAX_TOKENS
    await sync_to_async(assert_books_balance)(alice, retried)


async def test_a_stream_cut_mid_reply_is_billed_its_estimate_and_holds_nothing(alice_async, alice, upstream):
    upstream.script(Reply(chunks=["One ", "two ", "three ", "four"], cut_after=2))

    reply = await send_and_finish(alice_async)

    assert reply.error_code == "stream_cut"
    assert reply.usage_estimated and reply.completion_tokens == estimate_tokens("One two ")
    await sync_to_async(assert_books_balance)(alice, reply)


async def test_deleting_the_chat_mid_reply_bills_what_was_spent_and_holds_nothing(
    alice_async, alice, upstream, settings
):
    settings.STREAM_FLUSH_INTERVAL = 0.05
    upstream.script(Reply(chunks=LONG, delay=0.02))
    reply = await send(alice_async, "Write a lot")
    await eventually(lambda: upstream.requests and upstream.requests[0].chunks_sent >= 5)

    await alice_async.post(f"/c/{reply.conversation_id}/delete/")

    await asyncio.to_thread(upstream.wait_for_disconnects, 1)
    for _ in range(500):
        record = await UsageRecord.objects.filter(user=alice).afirst()
        if record:
            break
        await asyncio.sleep(0.01)
    assert record is not None, "the spending of a deleted chat's reply was never recorded"
    assert record.message_id is None and not await Message.objects.filter(pk=reply.pk).aexists()
    assert record.estimated and record.prompt_tokens > 0 and record.completion_tokens >= 5
    await sync_to_async(assert_books_balance)(alice)


def dead_reply(user: User, model: ChatModel, *, prompt_tokens: int, max_tokens: int) -> Message:
    """A reply whose server process died mid-stream, after reserving its budget."""
    chat = make_conversation(user, model=model, title="Steps")
    make_message(chat, "user", "What are the steps?")
    reply = make_message(chat, "assistant", "The first three steps are", status=Message.Status.STREAMING, model=model)
    budget_reserve(
        user_id=user.pk, model=model, prompt_tokens=prompt_tokens, max_tokens=max_tokens, message_id=reply.pk
    )
    return reply


def test_a_reservation_left_by_a_dead_process_stops_counting_after_the_ttl(settings, alice, mini):
    settings.RESERVATION_TTL = 600
    User.objects.filter(pk=alice.pk).update(tokens_per_day=1000)
    start = timezone.now()
    with frozen_at(start):
        dead_reply(alice, mini, prompt_tokens=100, max_tokens=900)

    with frozen_at(start + timedelta(seconds=599)), pytest.raises(QuotaExceeded) as refused:
        budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=900)
    with frozen_at(start + timedelta(seconds=600)):
        grant = budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=900)

    assert refused.value.code == "tokens_per_day"
    assert grant.max_tokens == 900


def test_an_expired_reservation_is_dropped_by_the_sweep_and_its_call_still_bills_what_it_used(settings, alice, mini):
    settings.RESERVATION_TTL = 600
    start = timezone.now()
    with frozen_at(start):
        slow = budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=900)
        live = budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=900)

    with frozen_at(start + timedelta(seconds=599)):
        call_command("sweep")
    assert Reservation.objects.filter(user=alice).count() == 2
    with frozen_at(start + timedelta(seconds=600)):
        call_command("sweep")
        spend(alice, reservation_id=live.reservation_id, prompt_tokens=90, completion_tokens=10)
    assert not Reservation.objects.filter(user=alice).exists()
    # The call whose reservation expired ends after all: what it used is billed.
    spend(alice, reservation_id=slow.reservation_id, prompt_tokens=80, completion_tokens=700)
    assert usage_summary(user=alice).tokens_today == 90 + 10 + 80 + 700
    assert_books_balance(alice)


def test_a_reply_whose_process_died_is_settled_with_estimated_usage_when_marked_interrupted(
    settings, alice, alice_client, mini
):
    settings.STREAM_STALE_AFTER = 30
    User.objects.filter(pk=alice.pk).update(tokens_per_day=1000)
    reply = dead_reply(alice, mini, prompt_tokens=120, max_tokens=880)

    with frozen_at(timezone.now() + timedelta(seconds=31)):
        call_command("sweep")  # as every server process does on its timer
        page = alice_client.get(f"/c/{reply.conversation_id}/")

    reply.refresh_from_db()
    assert INTERRUPTED_TEXT in html.unescape(page.content.decode())
    assert reply.status == Message.Status.INTERRUPTED
    completion = estimate_tokens("The first three steps are")
    assert (reply.prompt_tokens, reply.completion_tokens, reply.usage_estimated) == (120, completion, True)
    assert reply.cost == mini.cost(prompt_tokens=120, completion_tokens=completion)
    assert_books_balance(alice, reply)
    # Its hold on the day is gone, long before the TTL: only what it used still counts.
    grant = budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=900)
    assert grant.max_tokens == 1000 - 120 - completion - 100


def test_a_reply_whose_process_died_is_billed_its_prompt_even_after_its_reservation_expired(
    settings, alice, alice_client, mini
):
    settings.RESERVATION_TTL = 60
    settings.STREAM_STALE_AFTER = 120
    start = timezone.now()
    with frozen_at(start):
        reply = dead_reply(alice, mini, prompt_tokens=120, max_tokens=880)

    with frozen_at(start + timedelta(seconds=61)):
        call_command("sweep")  # the reservation has expired and goes; the reply is not stale yet
    assert not Reservation.objects.filter(message=reply).exists()
    with frozen_at(start + timedelta(seconds=121)):
        call_command("sweep")

    reply.refresh_from_db()
    assert reply.status == Message.Status.INTERRUPTED
    assert reply.prompt_tokens > 0, "the prompt went upstream, yet nothing was billed for it"
    assert_books_balance(alice, reply)


# -- max_tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "own, site_default, sent",
    [(300, None, 300), (None, 200, 200), (1000, 200, 1000), (100_000, None, MODEL_MAX_TOKENS)],
    ids=["own-cap", "site-default", "own-over-default", "model-max"],
)
async def test_max_tokens_sent_upstream_is_capped_by_the_users_cap(
    alice_async, alice, upstream, settings, own, site_default, sent
):
    settings.QUOTA_MAX_TOKENS_PER_REQUEST = site_default
    await set_limits(alice, max_tokens_per_request=own)

    reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.COMPLETE
    assert upstream.requests[0].json["max_tokens"] == sent


@pytest.mark.parametrize("room", [MIN_REPLY_TOKENS, 200, MODEL_MAX_TOKENS - 1])
async def test_max_tokens_shrinks_to_the_tokens_left_today(alice_async, alice, upstream, room):
    await set_limits(alice, tokens_per_day=10_000)
    await sync_to_async(spend)(alice, prompt_tokens=10_000 - HI_PROMPT - room)

    reply = await send_and_finish(alice_async)

    assert reply.status == Message.Status.COMPLETE
    assert upstream.requests[0].json["max_tokens"] == room


async def test_with_less_than_the_minimum_left_nothing_is_sent_upstream(alice_async, alice, upstream):
    await set_limits(alice, tokens_per_day=10_000)
    await sync_to_async(spend)(alice, prompt_tokens=10_000 - HI_PROMPT - (MIN_REPLY_TOKENS - 1))

    reply = await send(alice_async)

    assert reply.error_code == "tokens_per_day"
    assert upstream.requests == []


async def test_max_tokens_shrinks_to_what_the_dollars_left_buy(alice_async, alice, upstream):
    await set_limits(alice, usd_per_month=Decimal("0.01"))

    reply = await send_and_finish(alice_async, model="gpt-4o")

    assert reply.status == Message.Status.COMPLETE
    # GPT-4o output is $10 per million tokens: $0.01 buys 1,000 of them, less the prompt's price.
    assert 990 <= upstream.requests[0].json["max_tokens"] < 1000


# -- Allowed models -------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["form", "htmx"])
async def test_a_model_the_user_is_not_allowed_is_refused_and_nothing_is_stored(
    alice_async, only_mini, upstream, headers
):
    response = await alice_async.post("/c/new/messages/", {"text": "Hi", "model": "gpt-4o"}, headers=headers)

    assert response.status_code == 400
    assert "That model is not available. Pick one from the list." in response.content.decode()
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0
    assert upstream.requests == []


async def test_a_chat_on_a_model_no_longer_allowed_asks_for_another(alice_async, alice, only_mini, upstream):
    gpt4o = await ChatModel.objects.aget(model_id="gpt-4o")
    chat = await Conversation.objects.acreate(user=alice, model=gpt4o)

    response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Hi"}, headers=HTMX)

    assert response.status_code == 400
    assert "This chat's model is no longer available to you. Pick another." in html.unescape(response.content.decode())
    assert await Message.objects.acount() == 0
    assert upstream.requests == []


async def test_an_allowed_model_is_the_one_sent_upstream(alice_async, only_mini, upstream):
    reply = await send_and_finish(alice_async, model="gpt-4o-mini")

    assert reply.status == Message.Status.COMPLETE
    assert upstream.requests[0].json["model"] == "gpt-4o-mini"


def composer_models(client, url: str = "/") -> list[tuple[str, bool]]:
    page = parse_html(client.get(url).content)
    select = page.find("form", id="composer").labelled("Model")
    return [(option.attrs["value"], "selected" in option.attrs) for option in select.find_all("option")]


def test_the_composer_lists_only_the_models_the_user_may_pick(alice, alice_client):
    assert sorted(model for model, _ in composer_models(alice_client)) == ["gpt-4o", "gpt-4o-mini"]

    alice.allowed_models.set([ChatModel.objects.get(model_id="gpt-4o")])

    # The site's default model is not among them: the allowed one is picked instead.
    assert composer_models(alice_client) == [("gpt-4o", True)]
    chat = make_conversation(alice, model=ChatModel.objects.get(model_id="gpt-4o"))
    assert [model for model, _ in composer_models(alice_client, f"/c/{chat.pk}/")] == ["gpt-4o"]


# -- A user who hit a limit is told which and when it resets ---------------------------------


def article_of(page_html: bytes, message: Message):
    return parse_html(page_html).find("article", id=f"message-{message.pk}")


@pytest.mark.parametrize("own_limit", [True, False], ids=["own-limit", "site-default"])
async def test_over_the_days_tokens_the_chat_says_so_keeps_the_message_and_sends_nothing(
    alice_async, alice, upstream, settings, own_limit
):
    settings.TIME_ZONE = "UTC"
    if own_limit:
        await set_limits(alice, tokens_per_day=2000)
    else:
        settings.QUOTA_TOKENS_PER_DAY = 2000

    with frozen_at(AFTERNOON):
        await sync_to_async(spend)(alice, prompt_tokens=1500, completion_tokens=500)
        response = await alice_async.post("/c/new/messages/", {"text": "One more question"})
        page = await alice_async.get(response["Location"])

    reply = await latest_reply()
    said = "You have used your 2,000 tokens for today. It resets at 00:00 on 16 June (UTC), in 5 h 30 min."
    assert article_of(page.content, reply).find(role="alert").text == said
    assert "One more question" in page.content.decode()
    assert await Message.objects.filter(role=Message.Role.USER, content="One more question").aexists()
    assert upstream.requests == []
    assert not await Reservation.objects.aexists()


async def test_over_the_months_dollars_the_htmx_turn_says_so_and_sends_nothing(alice_async, alice, upstream, settings):
    settings.TIME_ZONE = "UTC"
    await set_limits(alice, usd_per_month=Decimal("1.00"))
    chat = await Conversation.objects.acreate(user=alice, model=await ChatModel.objects.aget(model_id="gpt-4o"))

    with frozen_at(AFTERNOON):
        await sync_to_async(spend)(alice, "gpt-4o", completion_tokens=100_000)  # $1.00
        response = await alice_async.post(f"/c/{chat.pk}/messages/", {"text": "Next question"}, headers=HTMX)

    reply = await latest_reply()
    fragment = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in fragment
    assert "Next question" in fragment
    alert = article_of(response.content, reply).find(role="alert").text
    assert alert.startswith("You have used your $1.00 for this month. It resets at 00:00 on 1 July (UTC)")
    assert 'data-stream-url="' not in fragment.split('id="conversation-list"')[0]
    assert upstream.requests == []
