"""No burst of calls can spend past a limit, whatever the script of the prompts.

A property tested with hypothesis: random Unicode prompts (CJK, emoji,
combining marks...), random bursts of parallel /v1 calls or chat messages,
random max_tokens, against an upstream that reports the worst usage a
byte-level BPE tokenizer could (tests/fake_upstream.py, usage="exact": every
byte of the prompt a token, and the reply cut to max_tokens). After each burst
has settled, the ledger never holds more than the user's limits.
"""

import asyncio
import json
import time
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts.billing.budget import usage_summary
from accounts.models import DailyUsage, Reservation, UsageRecord, User
from accounts.services import api_key_create
from conversations.models import Conversation, Message
from tests.fake_upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

# On gpt-4o ($2.50 in, $10 out per 1M tokens) the dollars run out first, on gpt-4o mini the tokens.
TOKENS_PER_DAY = 1_500
USD_PER_MONTH = Decimal("0.01")
# Long enough that every reply is cut at its max_tokens: the most a call can be billed.
ENDLESS = Reply(text="Ça va très bien, merci ! 你好，世界。 " * 400, usage="exact")
SETTLE_WITHIN = 10.0

# Characters of many scripts and widths in UTF-8: 1 byte (ASCII), 2 (accents, combining marks),
# 3 (CJK, kana, hangul) and 4 (emoji, with modifiers and joiners).
SCRIPTS = st.sampled_from(list("a Zé\u0301\u0308ß中文字日本語かなカナ한국어😀🎉👍🏽\u200d🧑‍💻"))
PROMPTS = st.text(
    alphabet=SCRIPTS | st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=300
).filter(str.strip)
CALL = st.fixed_dictionaries({"text": PROMPTS, "max_tokens": st.none() | st.integers(1, 3_000)})


@pytest.fixture
def limited(alice, catalog, upstream, settings):
    settings.RATELIMIT_API = settings.RATELIMIT_MESSAGES = "off"
    User.objects.filter(pk=alice.pk).update(tokens_per_day=TOKENS_PER_DAY, usd_per_month=USD_PER_MONTH)
    upstream.default = ENDLESS
    client = AsyncClient()
    client.force_login(alice)
    _, secret = api_key_create(user=alice, name="app")
    return client, secret


def books_cleared(user: User) -> None:
    """A fresh day and month for the next example."""
    UsageRecord.objects.filter(user=user).delete()
    DailyUsage.objects.filter(user=user).delete()
    Reservation.objects.filter(user=user).delete()
    Conversation.objects.filter(user=user).delete()


async def api_call(client: AsyncClient, secret: str, model: str, call: dict) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": call["text"]}]}
    if call["max_tokens"] is not None:
        body["max_tokens"] = call["max_tokens"]
    answer = await client.post(
        "/v1/chat/completions",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    return answer.status_code


async def message_send(client: AsyncClient, model: str, call: dict) -> int:
    answer = await client.post("/c/new/messages/", {"text": call["text"], "model": model})
    return answer.status_code


async def settled(user: User) -> None:
    """Wait (bounded) until every reply has ended and nothing is held."""
    deadline = time.monotonic() + SETTLE_WITHIN
    while (
        await Reservation.objects.filter(user=user).aexists()
        or await Message.objects.filter(user=user, status__in=Message.LIVE_STATUSES).aexists()
    ):
        assert time.monotonic() < deadline, "the burst did not settle"
        await asyncio.sleep(0.02)


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    calls=st.lists(CALL, min_size=1, max_size=6),
    path=st.sampled_from(["api", "web"]),
    model=st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
)
async def test_no_burst_spends_past_the_limits(limited, alice, upstream, calls, path, model):
    client, secret = limited
    await sync_to_async(books_cleared)(alice)

    if path == "api":
        statuses = await asyncio.gather(*(api_call(client, secret, model, call) for call in calls))
        assert set(statuses) <= {200, 429}
    else:
        statuses = await asyncio.gather(*(message_send(client, model, call) for call in calls))
        assert set(statuses) == {302}
    await settled(alice)

    spent = await sync_to_async(usage_summary)(user=alice)
    assert spent.tokens_today <= TOKENS_PER_DAY
    assert spent.usd_this_month <= USD_PER_MONTH
