"""The OpenAI-compatible /v1 API: apps and SDKs send a site key, the provider key stays here.

OpenAI's semantics apply: the reply belongs to the request, and a client that
disconnects cancels the upstream call. Quotas, rate limits and usage records
are the same services the web chat uses; each call is recorded against the
user and the key.
"""

import asyncio
import re
from collections.abc import AsyncIterator

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse

from accounts.billing.budget import QuotaExceeded
from accounts.billing.metered import MeteredCall
from accounts.models import UsageRecord
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
from gateway.auth import NO_KEY, api_models, bearer_secret, key_of, rate_limited
from gateway.chat_request import ChatRequest, InvalidRequest, chat_request_parse
from gateway.errors import openai_error, stream_error_event, upstream_error
from gateway.schema import json_body_parse


def _prepare(
    request, secret: str, chat: ChatRequest | None, invalid: JsonResponse | None
) -> MeteredCall | JsonResponse:
    """Check the key, the body, the rate limits and the model, and reserve the call's budget: one database step.

    A bad key is answered before a bad body, as OpenAI does.
    """
    key = key_of(request, secret)
    if isinstance(key, JsonResponse):
        return key
    if invalid is not None:
        return invalid
    if limited := rate_limited(request, key):
        return limited
    model = api_models(key).filter(model_id=chat.model).first()
    if model is None:
        return openai_error(
            404,
            f"The model `{chat.model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if chat.image_params and not model.accepts_images:
        return openai_error(
            400,
            f"The model `{chat.model}` does not accept images: send text only, or pick a model that takes images.",
            code="images_not_supported",
            param=chat.image_params[0],
        )
    call = MeteredCall(
        user=key.user,
        model=model,
        kind=UsageRecord.Kind.API,
        prompt=chat.messages,
        prompt_extra=chat.options,
        max_tokens=min(chat.max_tokens or model.max_output_tokens, model.max_output_tokens),
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


def _body_of(request) -> tuple[ChatRequest | None, JsonResponse | None]:
    try:
        return chat_request_parse(json_body_parse(request.body)), None
    except RequestDataTooBig:
        most = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20
        message = f"The request body is larger than this site accepts ({most:g} MB): send large images by https URL."
        return None, openai_error(413, message, code="request_too_large")
    except InvalidRequest as invalid:
        return None, openai_error(400, invalid.message, param=invalid.param, code=invalid.code)


async def chat_completions(request):
    """One metered call: reserved before the upstream hears of it, settled on every exit.

    The request counts as sent from the moment it leaves for the provider: a
    client that goes away after that is billed the prompt's estimate (the
    provider bills it too); a refusal by the provider bills nothing.
    """
    if request.method != "POST":
        return openai_error(405, "Use POST for /v1/chat/completions.")
    secret = bearer_secret(request)
    if not secret:
        return openai_error(401, NO_KEY, code="invalid_api_key")
    chat, invalid = _body_of(request)
    prepared = await db_step_to_end(_prepare, request, secret, chat, invalid, on_cancel=_release_if_reserved)
    if isinstance(prepared, JsonResponse):
        return prepared
    call = prepared
    reply_runner().timer_ensure()  # this process must say it is alive while the call is in flight
    # Sent once the provider has the whole request, not before: a client gone sooner costs nothing.
    on_request_sent.set(call.sent)
    upstream_body = {"model": call.model.model_id, "messages": chat.messages} | call.model.token_limit(call.max_tokens)
    upstream_body |= chat.options
    if chat.stream:
        try:
            stream = await stream_open(upstream_body)
        except UpstreamError as failure:
            call.refused()
            await call.asettle()
            return upstream_error(failure)
        except BaseException:  # cancelled (the app went away), or our own failure
            await call.asettle()
            raise
        relay = _relay(stream, call, chat.include_usage)
        _end_with_the_request(relay, stream, call)
        response = StreamingHttpResponse(relay, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    async with call:
        try:
            completion = await completion_create(upstream_body)
        except UpstreamError as failure:
            call.refused()
            return upstream_error(failure)
        call.usage = usage_from(completion["usage"]) if completion.get("usage") else None
        choice = completion["choices"][0]
        call.completion_text = choice["message"].get("content") or ""
        call.finish_reason = choice.get("finish_reason") or ""
    return JsonResponse(completion)


async def _relay(stream: ReplyStream, call: MeteredCall, include_usage: bool) -> AsyncIterator[bytes]:
    """The upstream's events byte for byte as they come, minus the usage chunk the app did not ask for.

    Only the events that carry usage, a finish reason or an error are parsed
    (in llm.ReplyStream.raw_events). The call is settled before the app hears
    the end, so its record is there when the app looks; if the app
    disconnects, closing the upstream stops the tokens and what was used is
    settled then.
    """
    ending = b"data: [DONE]\n\n"
    relayed = 0
    async with call:
        try:
            async for event in stream.raw_events():
                if not include_usage and USAGE_ONLY.search(event):
                    continue
                relayed += 1
                yield event
        except UpstreamError as failure:
            ending = stream_error_event(failure)
        finally:
            await stream.close()
            call.usage, call.finish_reason = stream.usage, stream.finish_reason or ""
            # Without usage (a stream cut short), the text is not at hand: OpenAI streams about a token an event.
            call.completion_estimate = relayed
    yield ending


# The last chunk when usage is asked for: no choices, only usage. We always ask, to bill every call.
USAGE_ONLY = re.compile(rb'"choices"\s*:\s*\[\s*\]')


# Relays being ended after their request ended without them (see _end_with_the_request).
_relays_ending: set[asyncio.Task] = set()


def _end_with_the_request(relay: AsyncIterator[bytes], stream: ReplyStream, call: MeteredCall) -> None:
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
