"""Who is calling /v1: the site key, its user, its limits and the models it may use."""

from django.http import JsonResponse

from accounts.models import ApiKey
from accounts.ratelimits import client_ip, refusing_window
from accounts.services import api_key_authenticate
from conversations.db import db_step
from conversations.models import ChatModel
from gateway.errors import openai_error

INVALID_KEY = (
    "Incorrect API key provided. Create a key for this site on your account's API keys page; "
    "the model provider's own keys do not work here."
)


def bearer_secret(request) -> str:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


NO_KEY = "You didn't provide an API key: send it as 'Authorization: Bearer KEY'."


def key_of(request, secret: str) -> ApiKey | JsonResponse:
    """The usable key with this secret, or the 401 to answer (sync: part of a caller's database step)."""
    key = api_key_authenticate(secret=secret, ip=client_ip(request))
    return key if key is not None else openai_error(401, INVALID_KEY, code="invalid_api_key")


async def key_from_request(request) -> tuple[ApiKey | None, JsonResponse | None]:
    """The site key in the Authorization header, or the 401 to answer.

    Looked up on the process's shared worker, so the request holds no database
    connection while it streams.
    """
    secret = bearer_secret(request)
    if not secret:
        return None, openai_error(401, NO_KEY, code="invalid_api_key")
    key = await db_step(key_of, request, secret)
    return (None, key) if isinstance(key, JsonResponse) else (key, None)


def rate_limited(request, key: ApiKey) -> JsonResponse | None:
    """Per key's user and per address, counted in the shared cache like every other limit."""
    checks = [
        ("api", lambda group, request: f"user:{key.user_id}", "RATELIMIT_API"),
        ("api-ip", "ip", "RATELIMIT_API_IP"),
    ]
    for group, key_of, setting in checks:
        window = refusing_window(request, group=group, key=key_of, setting=setting)
        if window:
            return openai_error(
                429,
                f"Rate limit reached for this site ({window.rate}). Try again shortly.",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=window.seconds,
            )
    return None


def api_models(key: ApiKey):
    """The chat models this key may use: the user's, narrowed to the key's own list if it has one."""
    models = ChatModel.objects.usable_by(key.user)
    if key.allowed_models.exists():
        models = models.filter(pk__in=key.allowed_models.values("pk"))
    return models
