"""The metered call: reserved before the upstream hears of it, settled exactly once on every exit, at its own prices.

In-process on PostgreSQL. Every test ends with the books balanced: no budget
held, and the ledger's rows adding up to the daily rollup.
"""

import asyncio
import contextlib
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db.models import Count, F, Sum
from django.utils import timezone

from accounts.billing.metered import MeteredCall, Usage, in_flight
from accounts.billing.processes import process_heartbeat
from accounts.billing.prompt_bound import estimate_tokens
from accounts.models import DailyUsage, Reservation, ServerProcess, UsageRecord
from conversations.models import ChatModel, Message
from conversations.services import versions
from tests.cancelling import held_at_await
from tests.conftest import make_conversation, make_message

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = [{"role": "user", "content": "Name three rivers of Europe, one line each."}]
ANSWER = "The Danube,\nthe Rhine,\nthe Loire."


def a_call(user, model: ChatModel, **fields) -> MeteredCall:
    fields = {"kind": UsageRecord.Kind.API, "prompt": PROMPT, "max_tokens": 500} | fields
    return MeteredCall(user=user, model=model, **fields)


def books_balance(user) -> None:
    """No budget held; the ledger and the daily rollup agree."""
    assert list(Reservation.objects.filter(user=user)) == []
    ledger = UsageRecord.objects.filter(user=user).aggregate(
        calls=Count("id"), tokens=Sum(F("prompt_tokens") + F("completion_tokens")), cost=Sum("cost")
    )
    rollup = DailyUsage.objects.filter(user=user).aggregate(calls=Sum("calls"), tokens=Sum("tokens"), cost=Sum("cost"))
    assert {key: value or 0 for key, value in rollup.items()} == {key: value or 0 for key, value in ledger.items()}


def records_of(call: MeteredCall) -> list[tuple]:
    return list(
        UsageRecord.objects.filter(call_id=call.call_id).values_list(
            "prompt_tokens", "completion_tokens", "cost", "estimated"
        )
    )


async def test_a_call_that_ends_well_is_billed_the_upstreams_usage_once(alice, mini):
    call = a_call(alice, mini)

    await call.areserve()
    held = await Reservation.objects.filter(call_id=call.call_id).aget()
    async with call:
        call.sent()
        call.completion_text = ANSWER
        call.usage = Usage(prompt_tokens=21, completion_tokens=12)
    await call.asettle()
    await sync_to_async(call.settle)()

    assert held.tokens == call.prompt_bound + 500
    assert await sync_to_async(records_of)(call) == [(21, 12, mini.cost(prompt_tokens=21, completion_tokens=12), False)]
    assert call not in in_flight
    await sync_to_async(books_balance)(alice)


async def test_a_call_the_provider_refused_bills_nothing(alice, mini):
    call = a_call(alice, mini)

    await call.areserve()
    async with call:
        call.sent()
        call.refused()  # a 429, say: the provider bills nothing

    assert await sync_to_async(records_of)(call) == []
    await sync_to_async(books_balance)(alice)


class OurBug(Exception):
    pass


async def test_an_error_of_ours_mid_call_settles_it_with_an_estimate_and_goes_on(alice, mini):
    call = a_call(alice, mini)
    await call.areserve()

    with pytest.raises(OurBug):
        async with call:
            call.sent()
            call.completion_text = ANSWER
            raise OurBug

    estimate = call.prompt_estimate, estimate_tokens(ANSWER)
    assert await sync_to_async(records_of)(call) == [
        (*estimate, mini.cost(prompt_tokens=estimate[0], completion_tokens=estimate[1]), True)
    ]
    assert call not in in_flight
    await sync_to_async(books_balance)(alice)


async def a_call_running(call: MeteredCall) -> None:
    """A whole call as the /v1 view makes it: reserve, send, wait for the upstream, take its answer."""
    await call.areserve()
    async with call:
        call.sent()
        await asyncio.sleep(0.001)  # the upstream at work
        call.completion_text = ANSWER
        call.usage = Usage(prompt_tokens=21, completion_tokens=12)


async def test_a_call_cancelled_at_any_of_its_awaits_is_settled_once(alice, mini):
    """The client goes away at the 1st, 2nd, ... suspension of the call, until the call runs to its end."""
    phases = set()
    for n in range(1, 100):
        call = a_call(alice, mini)
        task = asyncio.ensure_future(held_at_await(a_call_running(call), n, lambda: asyncio.current_task().cancel()))
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if not task.cancelled():
            break

        records = await sync_to_async(records_of)(call)
        if not call.reached_upstream:
            phases.add("reserving")  # nothing went upstream
            assert records == []
        elif call.usage is None:
            phases.add("upstream at work")
            assert records == [(call.prompt_estimate, 0, mini.cost(prompt_tokens=call.prompt_estimate), True)]
        else:
            phases.add("settling")  # which runs to its end all the same
            assert records == [(21, 12, mini.cost(prompt_tokens=21, completion_tokens=12), False)]
        assert call not in in_flight
        await sync_to_async(books_balance)(alice)

    assert phases == {"reserving", "upstream at work", "settling"}
    assert not task.cancelled(), "the call never ran to its end"
    assert await sync_to_async(records_of)(call) == [(21, 12, mini.cost(prompt_tokens=21, completion_tokens=12), False)]


def test_a_price_change_during_a_call_does_not_reprice_it(alice, mini):
    call = a_call(alice, mini)
    call.reserve()
    old = mini.prices()

    ChatModel.objects.filter(pk=mini.pk).update(input_price=Decimal("100"), output_price=Decimal("400"))
    call.sent()
    call.usage = Usage(prompt_tokens=2_000, completion_tokens=300)
    call.settle()

    assert records_of(call) == [(2_000, 300, old.cost(prompt_tokens=2_000, completion_tokens=300), False)]
    books_balance(alice)


def process_dies() -> None:
    """This test's process stops beating: its heartbeat, and the calls it started, are older than STREAM_STALE_AFTER."""
    long_ago = timezone.now() - timedelta(minutes=5)
    ServerProcess.objects.update(seen_at=long_ago)
    Reservation.objects.update(created_at=long_ago)
    Message.objects.filter(status__in=Message.LIVE_STATUSES).update(updated_at=long_ago)


def sweep() -> str:
    out = io.StringIO()
    call_command("sweep", stdout=out)
    return out.getvalue().strip()


def test_the_sweep_bills_a_dead_processes_call_at_its_own_prices_and_the_call_can_bill_no_more(settings, alice, mini):
    settings.STREAM_STALE_AFTER = 30
    process_heartbeat()
    call = a_call(alice, mini, prompt=[{"role": "user", "content": "x" * 400}])
    call.reserve()
    call.sent()
    old = mini.prices()
    ChatModel.objects.filter(pk=mini.pk).update(input_price=Decimal("100"), output_price=Decimal("400"))

    process_dies()
    said = sweep()

    assert said == "Interrupted 0 replies and settled 1 other calls of dead processes."
    assert records_of(call) == [(100, 0, old.cost(prompt_tokens=100), True)]
    assert not ServerProcess.objects.exists()
    books_balance(alice)
    # The process was only slow, and its call ends after all: the ledger has it already.
    call.usage = Usage(prompt_tokens=120, completion_tokens=40)
    call.settle()
    assert records_of(call) == [(100, 0, old.cost(prompt_tokens=100), True)]
    assert sweep() == "Interrupted 0 replies and settled 0 other calls of dead processes."
    books_balance(alice)


def test_the_sweep_interrupts_a_dead_processes_reply_keeping_its_text_and_settles_its_calls(settings, alice, mini):
    settings.STREAM_STALE_AFTER = 30
    process_heartbeat()
    chat = make_conversation(alice, model=mini, title="Rivers")
    make_message(chat, "user", PROMPT[0]["content"])
    reply = make_message(chat, "assistant", "The Danube,", status=Message.Status.STREAMING, model=mini)
    reply_call = a_call(alice, mini, kind=UsageRecord.Kind.REPLY, message=reply)
    reply_call.reserve()
    api_call = a_call(alice, mini)
    api_call.reserve()
    alive = a_call(alice, mini)  # reserved after the process died: a live process's, as far as the sweep can tell

    process_dies()
    alive.reserve()
    said = sweep()

    assert said == "Interrupted 1 replies and settled 1 other calls of dead processes."
    reply.refresh_from_db()
    assert (reply.status, reply.content, reply.usage_estimated) == (Message.Status.INTERRUPTED, "The Danube,", True)
    completion = estimate_tokens("The Danube,")
    assert records_of(reply_call) == [
        (
            reply_call.prompt_estimate,
            completion,
            mini.cost(prompt_tokens=reply_call.prompt_estimate, completion_tokens=completion),
            True,
        )
    ]
    assert len(records_of(api_call)) == 1
    assert list(Reservation.objects.values_list("call_id", flat=True)) == [alive.call_id]
    alive.settle()
    books_balance(alice)


def test_a_continued_reply_swept_is_billed_only_the_text_its_own_call_wrote(settings, alice, mini):
    settings.STREAM_STALE_AFTER = 30
    process_heartbeat()
    chat = make_conversation(alice, model=mini, title="Rivers")
    make_message(chat, "user", PROMPT[0]["content"])
    first_call = {"prompt_tokens": 20, "completion_tokens": 9, "cost": mini.cost(prompt_tokens=20, completion_tokens=9)}
    reply = make_message(chat, "assistant", "The Danube,\nthe Rhine,", model=mini, finish_reason="length", **first_call)
    plan = versions.reply_continue(reply=reply, user=alice)
    # The continuation wrote a line, saved with the rest, before its process died.
    Message.objects.filter(pk=reply.pk).update(status=Message.Status.STREAMING, content=ANSWER)

    process_dies()
    said = sweep()

    assert said == "Interrupted 1 replies and settled 0 other calls of dead processes."
    call, written = plan.call, estimate_tokens("\nthe Loire.")
    own_cost = mini.cost(prompt_tokens=call.prompt_estimate, completion_tokens=written)
    assert records_of(call) == [(call.prompt_estimate, written, own_cost, True)]
    reply.refresh_from_db()
    assert (reply.status, reply.content) == (Message.Status.INTERRUPTED, ANSWER)
    # What the reply shows it cost: both its calls.
    assert (reply.prompt_tokens, reply.completion_tokens, reply.cost) == (
        20 + call.prompt_estimate,
        9 + written,
        first_call["cost"] + own_cost,
    )
    books_balance(alice)
