"""POST /v1/realtime/client_secrets: a short-lived `ek_...` secret for a Realtime (voice) session.

An app (with a site key) or the logged-in browser (with its session and a CSRF
token) asks; the site lets through only a few session fields, holds each user
to one secret per 5 seconds and their daily realtime minutes, has the upstream
mint the secret with the provider key, records the lifetime granted and hands
the secret on. The app then talks to the provider directly with it. Neither the
secret nor the provider key is ever logged.
"""

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone

from accounts.billing.budget import QuotaExceeded
from accounts.models import ApiKey, RealtimeSecret, User
from accounts.ratelimits import refusing_window
from accounts.services import (
    realtime_secret_minted,
    realtime_secret_record,
    realtime_secret_release,
)
from conversations.db import db_step, db_step_to_end
from conversations.llm import UpstreamError, client_secret_create
from conversations.models import ChatModel
from gateway.auth import key_from_request
from gateway.chat_request import InvalidRequest
from gateway.errors import UPSTREAM_ERRORS, openai_error

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
    elif not isinstance(model, str) or not model:
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


def realtime_models(user: User, key: ApiKey | None):
    """The enabled realtime models this caller may use: the user's, narrowed to the key's own list if it has one."""
    models = ChatModel.objects.enabled().filter(realtime=True)
    if user.allowed_models.exists():
        models = models.filter(pk__in=user.allowed_models.values("pk"))
    if key is not None and key.allowed_models.exists():
        models = models.filter(pk__in=key.allowed_models.values("pk"))
    return models


async def _caller(request) -> tuple[User | None, ApiKey | None, JsonResponse | None]:
    """Who asks: the owner of the Bearer site key, else the logged-in user.

    A request with an Authorization header is judged by it alone: the API
    middleware skips the CSRF check for such requests, so the session must
    not count for them.
    """
    if "Authorization" not in request.headers:
        user = await request.auser()
        if user.is_authenticated:
            return user, None, None
    key, error = await key_from_request(request)
    if error:
        return None, None, error
    return key.user, key, None


def _refusal(exceeded: QuotaExceeded) -> JsonResponse:
    if exceeded.code == "realtime_interval":
        wait = (exceeded.resets_at - timezone.now()).total_seconds()
        return openai_error(429, exceeded.user_message, type="requests", code="rate_limit_exceeded", retry_after=wait)
    return openai_error(429, exceeded.user_message, type="insufficient_quota", code="insufficient_quota")


def _mint_reserve(request, user: User, key: ApiKey | None, mint: MintRequest) -> RealtimeSecret | JsonResponse:
    """The rate limit, the model and the user's minutes, then the secret's lifetime held: one database step."""
    window = refusing_window(request, group="api-ip", key="ip", setting="RATELIMIT_API_IP")
    if window:
        return openai_error(
            429,
            f"Rate limit reached for this site ({window.rate}). Try again shortly.",
            type="requests",
            code="rate_limit_exceeded",
            retry_after=window.seconds,
        )
    model = realtime_models(user, key).filter(model_id=mint.model).first()
    if model is None:
        return openai_error(
            404,
            f"The model `{mint.model}` does not exist, is not a realtime model, or you do not have access to it.",
            code="model_not_found",
            param="session.model",
        )
    try:
        return realtime_secret_record(
            user=user, api_key=key, model=model, seconds=mint.seconds,
            expires_at=timezone.now() + timedelta(seconds=mint.seconds),
        )  # fmt: skip
    except QuotaExceeded as exceeded:
        return _refusal(exceeded)


async def _release_if_held(held: RealtimeSecret | JsonResponse) -> None:
    if isinstance(held, RealtimeSecret):
        await db_step(realtime_secret_release, secret=held)


def _upstream_error(error: UpstreamError) -> JsonResponse:
    status, type, code = UPSTREAM_ERRORS.get(error.code, (502, "server_error", "upstream_error"))
    retry_after = error.retry_after if status in (429, 503) else None
    return openai_error(status, error.user_message, type=type, code=code, retry_after=retry_after)


async def client_secrets(request):
    if request.method != "POST":
        return openai_error(405, "Use POST for /v1/realtime/client_secrets.")
    user, key, error = await _caller(request)
    if error:
        return error
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return openai_error(400, "We could not parse the JSON body of your request.")
    try:
        mint = mint_request_parse(body)
    except InvalidRequest as invalid:
        return openai_error(400, invalid.message, param=invalid.param, code=invalid.code)
    # Reserve, mint, settle: the lifetime is held before the upstream is asked, and let go
    # if no secret reaches the caller, whatever stops it (a refusal, a client that went away).
    held = await db_step_to_end(_mint_reserve, request, user, key, mint, on_cancel=_release_if_held)
    if isinstance(held, JsonResponse):
        return held
    try:
        answer = await client_secret_create(mint.upstream_body())
        await db_step(realtime_secret_minted, secret=held, expires_at=datetime.fromtimestamp(answer["expires_at"], UTC))
    except UpstreamError as failure:
        await _release_if_held(held)
        return _upstream_error(failure)
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
