"""Hostile bodies against /v1, odd offsets against the web chat's stream.

Whatever comes: never a 5xx, no budget left held, nothing undeclared sent on.

Each /v1 endpoint is a FuzzTarget: its URL, the declared schema of its body
and a few valid bodies the corpus breaks (tests/gateway/hostile_bodies.py).
Adding an endpoint is adding a target.
"""

import time
from collections import Counter
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import Reservation
from accounts.services import api_key_create
from gateway.chat_request import CHAT_BODY
from gateway.embeddings import EMBEDDINGS_BODY
from gateway.schema import Spec
from tests.conftest import make_conversation, make_message
from tests.gateway.hostile_bodies import hostile_bodies

pytestmark = pytest.mark.django_db(transaction=True)

BODIES_PER_TARGET = 10_000
# A bound on the run, not a measure of it: far above what it takes, so a hang fails instead of stalling the suite.
RUN_BOUND_SECONDS = 600
PNG_1X1 = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

LOOK = {"type": "object", "properties": {"at": {"type": "string"}}}
COLOUR = {"type": "object", "properties": {"name": {"type": "string"}}}
CHAT_BODIES = [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PNG_1X1, "detail": "high"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a pixel"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "look", "description": "Look", "parameters": LOOK, "strict": True},
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "max_completion_tokens": 50,
        "temperature": 0.5,
        "stop": ["\n\n"],
        "n": 1,
    },
    {
        "model": "gpt-4o",
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "JSON only"}]},
            {"role": "user", "content": "A colour?", "name": "ann"},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "colour", "schema": COLOUR, "strict": True},
        },
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
        "top_logprobs": 2,
        "reasoning_effort": "low",
        "seed": 7,
        "user": "someone",
    },
]


RESPONSES_BODIES = [
    {"model": "gpt-4o-mini", "input": "Hi"},
    {
        "model": "gpt-4o-mini",
        "instructions": "Be brief.",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": PNG_1X1, "detail": "low"},
                ],
            },
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a pixel"},
        ],
        "tools": [{"type": "function", "name": "look", "description": "Look", "parameters": LOOK, "strict": True}],
        "tool_choice": "auto",
        "max_output_tokens": 50,
        "temperature": 0.5,
    },
    {
        "model": "gpt-4o",
        "input": [{"role": "user", "content": "A colour?"}],
        "text": {"format": {"type": "json_schema", "name": "colour", "schema": COLOUR, "strict": True}},
        "reasoning": {"effort": "low"},
        "stream": True,
        "user": "someone",
    },
]
EMBEDDINGS_BODIES = [
    {"model": "text-embedding-3-small", "input": "Hi"},
    {"model": "text-embedding-3-small", "input": ["one", "two"], "encoding_format": "float", "dimensions": 8},
    {"model": "text-embedding-3-small", "input": [[1, 2, 3]], "encoding_format": "base64", "user": "someone"},
]


@dataclass(frozen=True)
class FuzzTarget:
    url: str
    schema: Spec  # every body forwarded upstream must fit it as it is
    valid: list[dict]
    count: int = BODIES_PER_TARGET


TARGETS = [
    FuzzTarget("/v1/chat/completions", CHAT_BODY, CHAT_BODIES),
    # Translated onto Chat Completions: what reaches the provider is a chat body. Fewer bodies: the same
    # schema code, and the suite's time.
    FuzzTarget("/v1/responses", CHAT_BODY, RESPONSES_BODIES, count=3_000),
    FuzzTarget("/v1/embeddings", EMBEDDINGS_BODY, EMBEDDINGS_BODIES, count=2_000),
]


@pytest.fixture
def secret(alice, catalog, settings):
    settings.RATELIMIT_API = settings.RATELIMIT_API_IP = "1000000/h"
    return api_key_create(user=alice, name="fuzz")[1]


async def _answer(response) -> int:
    if response.streaming:  # read to its end: the call settles as the stream ends
        _ = [chunk async for chunk in response.streaming_content]
    return response.status_code


def _openai_error(response) -> bool:
    """Whether a refusal is in OpenAI's error format, which the SDKs turn into their exceptions."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


@pytest.mark.parametrize("target", TARGETS, ids=lambda target: target.url)
async def test_no_hostile_body_gets_a_5xx_leaves_budget_held_or_sends_anything_undeclared(target, secret, upstream):
    client, auth = AsyncClient(), {"Authorization": f"Bearer {secret}"}
    bound = time.monotonic() + RUN_BOUND_SECONDS
    statuses, server_errors, not_openai_errors = Counter(), [], []

    for valid in target.valid:
        assert await _answer(await client.post(target.url, valid, content_type="application/json", headers=auth)) == 200
    for body in hostile_bodies(target.valid, target.count, seed=8):
        response = await client.post(target.url, body, content_type="application/json", headers=auth)
        status = await _answer(response)
        statuses[status] += 1
        if status >= 500:
            server_errors.append((status, body[:300]))
        elif status >= 400 and not _openai_error(response):
            not_openai_errors.append((status, body[:300]))
        assert time.monotonic() < bound, f"{sum(statuses.values())} bodies in {RUN_BOUND_SECONDS} s"

    assert server_errors == []
    assert not_openai_errors == []
    assert sum(statuses.values()) >= target.count
    assert statuses[400] > target.count / 2, statuses  # the corpus does break bodies
    assert await Reservation.objects.acount() == 0
    forwarded = [request.json for request in upstream.requests]
    assert len(forwarded) > len(target.valid)  # some broken bodies were still valid and went through
    assert [body for body in forwarded if not target.schema.admits(body)] == []


ODD_OFFSETS = [
    "²", "١٢", "٣", "¹²", "Ⅻ", "0x10", "1e3", "-1", "+1", " 1", "1 ", "1.0", "", "\x00", "9" * 13, "9" * 5000,
    "18446744073709551616", "١", "𝟗", "1_000", "NaN", "∞", "%00", "0" * 12, "999999999999",
]  # fmt: skip


async def test_no_offset_breaks_the_reply_stream(alice, alice_async, catalog):
    conversation = await sync_to_async(make_conversation)(alice)
    reply = await sync_to_async(make_message)(conversation, role="assistant", content="Hello there")
    url = f"/c/{conversation.pk}/messages/{reply.pk}/stream/"

    answers = {}
    for offset in ODD_OFFSETS:
        answers[f"?offset={offset!r}"] = await _answer(await alice_async.get(url, {"offset": offset}))
        # A header arrives as bytes, which the server reads as Latin-1.
        header = offset.encode().decode("latin-1")
        answers[f"Last-Event-ID: {offset!r}"] = await _answer(
            await alice_async.get(url, headers={"Last-Event-ID": header})
        )

    assert {name: status for name, status in answers.items() if status >= 500} == {}
    assert answers["?offset='²'"] == answers["?offset='9999999999999'"] == 400
    assert answers["?offset='999999999999'"] == answers["?offset='000000000000'"] == 200
