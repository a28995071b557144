"""What every metered /v1 endpoint does around its upstream call, written once.

The key, the rate limits, the model and the budget's reservation are one
database step, in OpenAI's order (a bad key is answered before a bad body); a
streamed answer's relay ends with its request, however the request ends.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from django.http import StreamingHttpResponse

from accounts.billing.budget import QuotaExceeded
from accounts.billing.metered import MeteredCall
from accounts.models import UsageRecord
from chatsite.event_streams import event_stream_response
from conversations.db import db_step_to_end
from conversations.llm import (
    ReplyStream,
    UpstreamError,
    completion_create,
    on_request_sent,
    stream_open,
    usage_from,
)
from conversations.replies.runner import reply_runner
from gateway.auth import caller_authenticate, caller_authenticate_with_model, model_not_found, rate_limit_check
from gateway.decorators import json_body
from gateway.errors import ApiError, quota_error, upstream_passed_through
from gateway.frames import framed

Checked = TypeVar("Checked")


@dataclass(frozen=True)
class CallAsk:
    """What a checked /v1 request asks of the upstream, as far as its reservation goes."""

    model_id: str
    prompt: list[dict]
    max_tokens: int | None  # None: the model's own most (0 for an embedding model)
    prompt_extra: object = None  # sent besides the prompt: tools, a response format...
    embedding: bool = False  # an embedding model is asked for, not a chat model
    image_params: list[str] = field(default_factory=list)  # where the prompt's images are ("messages[0].content[1]")


def body_checked(request, check: Callable[[object], Checked]) -> Checked | ApiError:
    """The JSON body checked by `check`, or what is wrong with it: told only once the key is known to be good."""
    try:
        return check(json_body(request))
    except ApiError as invalid:
        return invalid


def _prepare(request, asked: Checked | ApiError, ask_of: Callable[[Checked], CallAsk]) -> MeteredCall:
    if isinstance(asked, ApiError):
        caller_authenticate(request)  # a bad key is told before a bad body
        raise asked
    ask = ask_of(asked)
    key, model = caller_authenticate_with_model(request, ask.model_id, embedding=ask.embedding)
    rate_limit_check(request, user=key.user)
    if model is None:
        raise model_not_found(ask.model_id)
    if ask.image_params and not model.accepts_images:
        raise ApiError(
            400,
            f"The model `{ask.model_id}` does not accept images: send text only, or pick a model that takes images.",
            code="images_not_supported",
            param=ask.image_params[0],
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
        raise quota_error(exceeded) from None
    return call


async def _release(call: MeteredCall) -> None:
    await call.asettle()


async def metered_call_open(request, asked: Checked | ApiError, ask_of: Callable[[Checked], CallAsk]) -> MeteredCall:
    """Check the key, the body (`asked`: checked, or what is wrong with it), the rate limits and the model asked
    (`ask_of` the checked body), and reserve the call.

    One database step; a client gone meanwhile leaves nothing reserved. Any
    refusal is raised as an ApiError.
    """
    call = await db_step_to_end(_prepare, request, asked, ask_of, on_cancel=_release)
    reply_runner().timer_ensure()  # this process must say it is alive while the call is in flight
    # Sent once the provider has the whole request, not before: a client gone sooner costs nothing.
    on_request_sent.set(call.sent)
    return call


def chat_body(call: MeteredCall, messages: list[dict], options: dict) -> dict:
    """The Chat Completions body for the call's model, its token limit under the name the model takes."""
    return {"model": call.model.model_id, "messages": messages} | call.model.token_limit(call.max_tokens) | options


async def chat_stream_open(call: MeteredCall, body: dict) -> ReplyStream:
    """The upstream's stream for a reserved call. Not retried here: the app's SDK retries by itself.

    A refusal reaches the app as the provider said it, and bills nothing; on any
    failure (a client gone included) the call is settled before it goes on.
    """
    try:
        return await stream_open(body, retry=False)
    except UpstreamError as failure:
        call.refused()
        await call.asettle()
        raise upstream_passed_through(failure) from None
    except BaseException:
        await call.asettle()
        raise


async def chat_completion(call: MeteredCall, body: dict) -> dict:
    """The upstream's whole completion, its usage on the call; run inside `async with call`, which settles it."""
    try:
        completion = await completion_create(body, retry=False)
    except UpstreamError as failure:
        call.refused()
        raise upstream_passed_through(failure) from None
    call.usage = usage_from(completion["usage"]) if completion.get("usage") else None
    return completion


# Relays being ended after their request ended without them (see relay_response).
_relays_ending: set[asyncio.Task] = set()


def relay_response(
    request, relay: AsyncIterator[bytes], stream: ReplyStream, call: MeteredCall
) -> StreamingHttpResponse:
    """The relay (an async generator) as server-sent events in frames (gateway/frames.py), ended with its
    request, however the request ends.

    A client that goes away after the view returned but before its body
    started (in a middleware, or while the headers are sent) makes Django drop
    the response with its relay never started, so the relay's own `finally`
    would never run: the upstream stream would stay open and the reservation
    held until it expires. One cut while the relay waits at a `yield` leaves it
    to the garbage collector; this ends it at once.
    """
    frames = framed(relay, read_before=stream.read_before)

    def request_ended(_) -> None:
        if not call.settled:
            ending = asyncio.ensure_future(_relay_end(frames, stream, call))
            _relays_ending.add(ending)
            ending.add_done_callback(_relays_ending.discard)

    asyncio.current_task().add_done_callback(request_ended)
    return event_stream_response(request, frames)


async def _relay_end(frames, stream: ReplyStream, call: MeteredCall) -> None:
    await frames.aclose()  # frames left at a yield run their `finally`: the stream closes, the call settles
    await stream.close()  # for a relay that never started
    await call.asettle()
