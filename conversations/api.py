"""The OpenAI-compatible /v1 API: apps and SDKs send a site key, the provider key stays here.

OpenAI's semantics apply: the reply belongs to the request, and a client that
disconnects cancels the upstream call. Quotas, rate limits and usage records
are the same services the web chat uses; each call is recorded against the
user and the key.
"""

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.decorators import sync_and_async_middleware
from django_ratelimit.core import is_ratelimited

from accounts.billing.budget import QuotaExceeded
from accounts.billing.metered import MeteredCall
from accounts.models import ApiKey, UsageRecord
from accounts.ratelimits import client_ip, rate, retry_after_seconds
from accounts.services import api_key_authenticate
from conversations.db import db_step, db_step_to_end
from conversations.llm import (
    ReplyStream,
    UpstreamError,
    completion_create,
    on_request_sent,
    stream_open,
    usage_from,
)
from conversations.models import ChatModel
from conversations.openai_request import ChatRequest, InvalidRequest, chat_request_parse
from conversations.replies.runner import reply_runner

# Endpoints a logged-in browser may call with its session (and so a CSRF token);
# every other /v1 call carries a Bearer key, which no other site can make a browser send.
SESSION_PATHS = {"/v1/realtime/client_secrets"}


def openai_error(
    status: int,
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> JsonResponse:
    """An error in OpenAI's format, so the SDKs raise the matching exception."""
    response = JsonResponse({"error": {"message": message, "type": type, "param": param, "code": code}}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(max(math.ceil(retry_after), 1))
    return response


# How each upstream failure reaches the app: (status, type, code).
UPSTREAM_ERRORS = {
    "rate_limited": (429, "requests", "rate_limit_exceeded"),
    "context_length_exceeded": (400, "invalid_request_error", "context_length_exceeded"),
    "upstream_rejected": (400, "invalid_request_error", None),
    "model_not_found": (404, "invalid_request_error", "model_not_found"),
    "upstream_unavailable": (503, "server_error", "upstream_unavailable"),
    "insufficient_quota": (503, "server_error", "upstream_unavailable"),
}


def upstream_error(error: UpstreamError) -> JsonResponse:
    status, type, code = UPSTREAM_ERRORS.get(error.code, (502, "server_error", "upstream_error"))
    return openai_error(
        status, error.user_message, type=type, code=code, param="messages" if status == 400 else None,
        retry_after=error.retry_after if status in (429, 503) else None,
    )  # fmt: skip


def _stream_error_event(error: UpstreamError) -> bytes:
    _, type, code = UPSTREAM_ERRORS.get(error.code, (502, "server_error", "upstream_error"))
    body = {"error": {"message": error.user_message, "type": type, "param": None, "code": code or error.code}}
    return f"data: {json.dumps(body)}\n\n".encode()


INVALID_KEY = (
    "Incorrect API key provided. Create a key for this site on your account's API keys page; "
    "the model provider's own keys do not work here."
)


def _bearer_secret(request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


NO_KEY = "You didn't provide an API key: send it as 'Authorization: Bearer KEY'."


def _key_of(request, secret: str) -> ApiKey | JsonResponse:
    """The usable key with this secret, or the 401 to answer (sync: part of a caller's database step)."""
    key = api_key_authenticate(secret=secret, ip=client_ip(request))
    return key if key is not None else openai_error(401, INVALID_KEY, code="invalid_api_key")


async def key_from_request(request) -> tuple[ApiKey | None, JsonResponse | None]:
    """The site key in the Authorization header, or the 401 to answer.

    Looked up on the process's shared worker, so the request holds no database
    connection while it streams.
    """
    secret = _bearer_secret(request)
    if not secret:
        return None, openai_error(401, NO_KEY, code="invalid_api_key")
    key = await db_step(_key_of, request, secret)
    return (None, key) if isinstance(key, JsonResponse) else (key, None)


def _rate_limited(request, key: ApiKey) -> JsonResponse | None:
    """Per key's user and per address, counted in the shared cache like every other limit."""
    checks = [
        ("api", lambda group, request: f"user:{key.user_id}", "RATELIMIT_API"),
        ("api-ip", "ip", "RATELIMIT_API_IP"),
    ]
    for group, key_of, setting in checks:
        if is_ratelimited(request, group=group, key=key_of, rate=rate(setting), increment=True):
            return openai_error(
                429,
                f"Rate limit reached for this site ({getattr(settings, setting)}). Try again shortly.",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=retry_after_seconds(setting),
            )
    return None


def api_models(key: ApiKey):
    """The chat models this key may use: the user's, narrowed to the key's own list if it has one."""
    models = ChatModel.objects.usable_by(key.user)
    if key.allowed_models.exists():
        models = models.filter(pk__in=key.allowed_models.values("pk"))
    return models


def _prepare(
    request, secret: str, chat: ChatRequest | None, invalid: JsonResponse | None
) -> MeteredCall | JsonResponse:
    """Check the key, the body, the rate limits and the model, and reserve the call's budget: one database step.

    A bad key is answered before a bad body, as OpenAI does.
    """
    key = _key_of(request, secret)
    if isinstance(key, JsonResponse):
        return key
    if invalid is not None:
        return invalid
    if limited := _rate_limited(request, key):
        return limited
    model = api_models(key).filter(model_id=chat.model).first()
    if model is None:
        return openai_error(
            404,
            f"The model `{chat.model}` does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
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
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return None, openai_error(400, "We could not parse the JSON body of your request.")
    try:
        return chat_request_parse(body), None
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
    secret = _bearer_secret(request)
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
    upstream_body = {"model": call.model.model_id, "messages": chat.messages, "max_tokens": call.max_tokens}
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
            ending = _stream_error_event(failure)
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


async def models_list(request):
    if request.method != "GET":
        return openai_error(405, "Use GET for /v1/models.")
    key, error = await key_from_request(request)
    if error:
        return error
    models = await sync_to_async(lambda: list(api_models(key).values_list("model_id", "pk")))()
    data = [{"id": model_id, "object": "model", "created": 0, "owned_by": "chatsite"} for model_id, _ in models]
    return JsonResponse({"object": "list", "data": data})


def _cors_headers(response: HttpResponse, origin: str) -> HttpResponse:
    allowed = settings.CORS_ALLOWED_ORIGINS
    if origin and ("*" in allowed or origin in allowed):
        response["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
        response["Vary"] = "Origin"
        response["Access-Control-Expose-Headers"] = "Retry-After, X-Request-Id"
    return response


def _preflight(request) -> HttpResponse:
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    requested = request.headers.get("Access-Control-Request-Headers", "")
    response["Access-Control-Allow-Headers"] = requested or "authorization, content-type"
    response["Access-Control-Max-Age"] = "600"
    return _cors_headers(response, request.headers.get("Origin", ""))


@sync_and_async_middleware
def api_middleware(get_response):
    """For /v1: CORS for the configured origins (a Flutter web build calls from its own origin), and no CSRF
    check on calls that carry a Bearer key.

    Sits before CsrfViewMiddleware.
    """

    def before(request) -> HttpResponse | None:
        if not request.path.startswith("/v1/"):
            return None
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(request)
        if "Authorization" in request.headers or request.path not in SESSION_PATHS:
            request._dont_enforce_csrf_checks = True
        return None

    def after(request, response):
        if request.path.startswith("/v1/"):
            _cors_headers(response, request.headers.get("Origin", ""))
        return response

    if asyncio.iscoroutinefunction(get_response):

        async def middleware(request):
            return before(request) or after(request, await get_response(request))

    else:

        def middleware(request):
            return before(request) or after(request, get_response(request))

    return middleware
