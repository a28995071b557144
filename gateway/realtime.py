"""POST /v1/realtime/client_secrets: a short-lived `ek_...` secret for a Realtime (voice) session.

An app (with a site key) or the logged-in browser (with its session and a CSRF
token) asks; the site lets through only a few session fields, holds each user
to one secret per 5 seconds and their daily realtime minutes, has the upstream
mint the secret with the provider key, records the lifetime granted and hands
the secret on. The app then talks to the provider directly with it. Neither the
secret nor the provider key is ever logged.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone

from accounts.billing.budget import QuotaExceeded
from accounts.models import RealtimeSecret
from accounts.services import (
    realtime_secret_minted,
    realtime_secret_record,
    realtime_secret_release,
)
from conversations.db import db_step, db_step_to_end
from conversations.llm import UpstreamError, client_secret_create
from gateway.auth import api_model, rate_limit_check
from gateway.chat_request import InvalidRequest
from gateway.decorators import api_view, json_body
from gateway.errors import ApiError, quota_error, upstream_in_our_words

DEFAULT_SECONDS = 120
MIN_SECONDS, MAX_SECONDS = 10, 7200
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
# Everything else (tools, audio input, tracing, ...) stays the site's to decide: an app
# holding a secret could otherwise run sessions the site never agreed to.
ALLOWED = "expires_after.seconds, session.type, session.model, session.instructions and session.audio.output.voice"


@dataclass(frozen=True)
class MintRequest:
    seconds: int
    model: str
    instructions: str | None = None
    voice: str | None = None

    def upstream_body(self) -> dict:
        session: dict = {"type": "realtime", "model": self.model}
        if self.instructions is not None:
            session["instructions"] = self.instructions
        if self.voice is not None:
            session["audio"] = {"output": {"voice": self.voice}}
        return {"expires_after": {"anchor": "created_at", "seconds": self.seconds}, "session": session}


def _fields(value, where: str, allowed: set[str]) -> dict:
    """An object of the request with only allowed fields; null or absent is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be an object.", where)
    for name in value:
        if name not in allowed:
            param = f"{where}.{name}" if where else name
            raise InvalidRequest(
                f"'{param}' cannot be set through this site: only {ALLOWED} can.", param, "unknown_parameter"
            )
    return value


def mint_request_parse(body) -> MintRequest:
    """The app's request in OpenAI's shape, checked field by field; null means not given."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    _fields(body, "", {"expires_after", "session"})
    expires_after = _fields(body.get("expires_after"), "expires_after", {"anchor", "seconds"})
    if expires_after.get("anchor") not in (None, "created_at"):
        raise InvalidRequest("'expires_after.anchor' must be created_at.", "expires_after.anchor")
    seconds = expires_after.get("seconds")
    if seconds is None:
        seconds = DEFAULT_SECONDS
    elif isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidRequest("'expires_after.seconds' must be a whole number of seconds.", "expires_after.seconds")

    session = _fields(body.get("session"), "session", {"type", "model", "instructions", "audio"})
    if session.get("type") not in (None, "realtime"):
        raise InvalidRequest("'session.type' must be realtime.", "session.type")
    model = session.get("model")
    if model is None:
        model = settings.REALTIME_DEFAULT_MODEL
    elif not isinstance(model, str) or not model or not model.isprintable():  # NUL cannot even be looked up
        raise InvalidRequest("'session.model' must be the id of a realtime model.", "session.model")
    instructions = session.get("instructions")
    limit = settings.SYSTEM_PROMPT_MAX_CHARS
    if instructions is not None and (not isinstance(instructions, str) or len(instructions) > limit):
        raise InvalidRequest(
            f"'session.instructions' must be a string of at most {limit:,} characters.", "session.instructions"
        )
    audio = _fields(session.get("audio"), "session.audio", {"output"})
    voice = _fields(audio.get("output"), "session.audio.output", {"voice"}).get("voice")
    if voice is not None and voice not in VOICES:
        raise InvalidRequest(
            f"'session.audio.output.voice' must be one of {', '.join(VOICES)}.", "session.audio.output.voice"
        )
    # OpenAI accepts 10 s to 2 h; out of range is clamped rather than refused.
    seconds = min(max(seconds, MIN_SECONDS), MAX_SECONDS)
    return MintRequest(seconds=seconds, model=model, instructions=instructions, voice=voice)


def _refusal(exceeded: QuotaExceeded) -> ApiError:
    if exceeded.code == "realtime_interval":
        wait = (exceeded.resets_at - timezone.now()).total_seconds()
        return ApiError(429, exceeded.user_message, type="requests", code="rate_limit_exceeded", retry_after=wait)
    return quota_error(exceeded)


def _mint_reserve(request, mint: MintRequest) -> RealtimeSecret:
    """The rate limit, the model and the user's minutes, then the secret's lifetime held: one database step."""
    rate_limit_check(request, user=None)  # the user's own limit is one secret per few seconds, checked below
    model = api_model(request, mint.model, param="session.model", realtime=True)
    try:
        return realtime_secret_record(
            user=request.api_user, api_key=request.api_key, model=model, seconds=mint.seconds,
            expires_at=timezone.now() + timedelta(seconds=mint.seconds),
        )  # fmt: skip
    except QuotaExceeded as exceeded:
        raise _refusal(exceeded) from None


async def _release_if_held(held: RealtimeSecret) -> None:
    await db_step(realtime_secret_release, secret=held)


@api_view(methods=("POST",), session=True)
async def client_secrets(request):
    """An app with a site key, or the logged-in browser with its session and CSRF token, asks for a secret.

    The site asks the provider itself, so the provider's refusals are told in the site's words.
    """
    mint = mint_request_parse(json_body(request, empty={}))
    # Reserve, mint, settle: the lifetime is held before the upstream is asked, and let go
    # if no secret reaches the caller, whatever stops it (a refusal, a client that went away).
    held = await db_step_to_end(_mint_reserve, request, mint, on_cancel=_release_if_held)
    try:
        answer = await client_secret_create(mint.upstream_body())
        await db_step(realtime_secret_minted, secret=held, expires_at=datetime.fromtimestamp(answer["expires_at"], UTC))
    except UpstreamError as failure:
        await _release_if_held(held)
        raise upstream_in_our_words(failure) from None
    except BaseException:
        await asyncio.shield(_release_if_held(held))
        raise
    model = held.model
    response = JsonResponse(
        {
            "value": answer["value"],
            "expires_at": answer["expires_at"],
            "session": {"type": "realtime", "model": model.model_id},
        }
    )
    response["Cache-Control"] = "no-store"
    return response
