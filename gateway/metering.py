"""What every metered /v1 endpoint does around its upstream call, written once.

The key, the body, the rate limits, the model and the budget's reservation are
one database step, in OpenAI's order (a bad key is answered before a bad body);
a streamed answer's relay ends with its request, however the request ends.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from django.http import JsonResponse, StreamingHttpResponse

from accounts.billing.budget import QuotaExceeded
from accounts.billing.metered import MeteredCall
from accounts.models import UsageRecord
from conversations.db import db_step_to_end
from conversations.llm import ReplyStream
from gateway.auth import NO_KEY, api_models, bearer_secret, key_of, rate_limited
from gateway.chat_request import InvalidRequest
from gateway.errors import openai_error

Checked = TypeVar("Checked")


@dataclass(frozen=True)
class CallAsk:
    """What a checked /v1 request asks of the upstream, as far as its reservation goes."""

    model_id: str
    prompt: list[dict]
    max_tokens: int | None  # None: the model's own most (0 for an embedding model)
    prompt_extra: object = None  # sent besides the prompt: tools, a response format...
    embedding: bool = False  # an embedding model is asked for, not a chat model


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")  # Python's json reads NaN and Infinity; JSON has neither


def body_checked(request, check: Callable[[object], Checked]) -> tuple[Checked | None, JsonResponse | None]:
    """The JSON body checked by `check`, or the 400 to answer (once the key is known to be good)."""
    try:
        body = json.loads(request.body, parse_constant=_not_json)
        # A lone surrogate (\ud800) parses, but no provider can be sent it: UTF-8 cannot carry it.
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, UnicodeError, RecursionError):
        return None, openai_error(400, "We could not parse the JSON body of your request.")
    try:
        return check(body), None
    except InvalidRequest as invalid:
        return None, openai_error(400, invalid.message, param=invalid.param, code=invalid.code)


def _prepare(request, secret: str, ask: CallAsk | None, invalid: JsonResponse | None) -> MeteredCall | JsonResponse:
    key = key_of(request, secret)
    if isinstance(key, JsonResponse):
        return key
    if invalid is not None:
        return invalid
    if limited := rate_limited(request, key):
        return limited
    model = api_models(key, embedding=ask.embedding).filter(model_id=ask.model_id).first()
    if model is None:
        return openai_error(
            404,
            f"The model `{ask.model_id}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    call = MeteredCall(
        user=key.user,
        model=model,
        kind=UsageRecord.Kind.API,
        prompt=ask.prompt,
        prompt_extra=ask.prompt_extra,
        max_tokens=min(ask.max_tokens or model.max_output_tokens, model.max_output_tokens),
        api_key=key,
    )
    try:
        call.reserve()
    except QuotaExceeded as exceeded:
        return openai_error(429, exceeded.user_message, type="insufficient_quota", code="insufficient_quota")
    return call


async def _release_if_reserved(prepared: MeteredCall | JsonResponse) -> None:
    if isinstance(prepared, MeteredCall):
        await prepared.asettle()


async def metered_call_open(request, ask: CallAsk | None, invalid: JsonResponse | None) -> MeteredCall | JsonResponse:
    """Check the key, the body (`invalid` is its 400), the rate limits and the model, and reserve the call.

    One database step; a client gone meanwhile leaves nothing reserved. The
    answer is the reserved call, or the error to give.
    """
    secret = bearer_secret(request)
    if not secret:
        return openai_error(401, NO_KEY, code="invalid_api_key")
    return await db_step_to_end(_prepare, request, secret, ask, invalid, on_cancel=_release_if_reserved)


# Relays being ended after their request ended without them (see relay_ends_with_request).
_relays_ending: set[asyncio.Task] = set()


def relay_ends_with_request(relay: AsyncIterator[bytes], stream: ReplyStream, call: MeteredCall) -> None:
    """When the request's task ends, end its relay too, if the relay did not end itself.

    A client that goes away after the view returned but before its body
    started (in a middleware, or while the headers are sent) makes Django drop
    the response with its relay never started, so the relay's own `finally`
    would never run: the upstream stream would stay open and the reservation
    held until it expires. One cut while the relay waits at a `yield` leaves it
    to the garbage collector; this ends it at once.
    """

    def request_ended(_) -> None:
        if not call.settled:
            ending = asyncio.ensure_future(_relay_end(relay, stream, call))
            _relays_ending.add(ending)
            ending.add_done_callback(_relays_ending.discard)

    asyncio.current_task().add_done_callback(request_ended)


async def _relay_end(relay, stream: ReplyStream, call: MeteredCall) -> None:
    await relay.aclose()  # a relay left at a yield runs its `finally`: the stream closes, the call settles
    await stream.close()  # for a relay that never started
    await call.asettle()


def event_stream_response(relay: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """The relay as server-sent events, never buffered on the way (nginx included)."""
    response = StreamingHttpResponse(relay, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
