"""Who is calling /v1: the site key, its user, its limits and the models it may use."""

from accounts.models import ApiKey, User
from accounts.ratelimits import client_ip, refusing_window
from accounts.services import RowAlongside, api_key_authenticate, api_key_authenticate_reading
from conversations.models import ChatModel, ReadAlongside, chat_model_served, usable_model, usable_rule
from gateway.errors import ApiError

NO_KEY = "You didn't provide an API key: send it as 'Authorization: Bearer KEY' (or 'api-key: KEY')."
INVALID_KEY = (
    "Incorrect API key provided. Create a key for this site on your account's API keys page; "
    "the model provider's own keys do not work here."
)
KEY_HEADERS = ("Authorization", "api-key")


def sends_a_key(request) -> bool:
    """Whether the request carries key credentials: then they alone judge it, whatever session it has."""
    return any(header in request.headers for header in KEY_HEADERS)


def key_secret(request) -> str:
    """The site key sent as `Authorization: Bearer KEY`, or as `api-key: KEY` (Azure-style clients, Dart's recipe)."""
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return request.headers.get("api-key", "").strip()


def caller_authenticate(request) -> ApiKey:
    """The usable key with the request's secret, attached to the request with its user; else the 401.

    Sync: part of a caller's database step (see gateway/decorators.py).
    """
    return _caller(request, api_key_authenticate(secret=request.api_secret, ip=client_ip(request)))


def caller_authenticate_with_model(
    request, model_id: str, *, embedding: bool = False
) -> tuple[ApiKey, ChatModel | None]:
    """caller_authenticate, and the chat (or embedding) model of this id if the caller may use it (api_model's
    rule), None if not: read with the key, one round trip for both on every metered call."""
    alongside = None
    if embedding or chat_model_served(model_id):
        user, key = ReadAlongside(User, "u.id"), ReadAlongside(ApiKey, "k.id")
        rule, params = usable_rule("m", user=user, key=key, embedding=embedding)
        alongside = RowAlongside(ChatModel, "m", f"m.model_id = %s AND {rule}", [model_id, *params])
    key, model = api_key_authenticate_reading(secret=request.api_secret, ip=client_ip(request), alongside=alongside)
    return _caller(request, key), model


def _caller(request, key: ApiKey | None) -> ApiKey:
    if key is None:
        # A refused key counts against its address like a good one: whoever tries key after key from one address
        # is stopped by the same limit as a client that calls too often, and each try costs a database lookup.
        rate_limit_check(request, user=None)
        raise ApiError(401, INVALID_KEY, code="invalid_api_key")
    request.api_key, request.api_user = key, key.user
    return key


def rate_limit_check(request, *, user: User | None) -> None:
    """Per address, and per user when one is given, counted in the shared cache like every other limit."""
    checks = [("api-ip", "ip", "RATELIMIT_API_IP")]
    if user is not None:
        checks.insert(0, ("api", lambda group, request: f"user:{user.pk}", "RATELIMIT_API"))
    for group, key_of, setting in checks:
        window = refusing_window(request, group=group, key=key_of, setting=setting)
        if window:
            raise ApiError(
                429,
                f"Rate limit reached for this site ({window.rate}). Try again shortly.",
                type="requests",
                code="rate_limit_exceeded",
                retry_after=window.seconds,
            )


def api_models(*, user: User, key: ApiKey | None, realtime: bool = False, embedding: bool = False):
    """The enabled models of one kind (chat, realtime or embedding) this caller may use, narrowed to the key's list."""
    models = ChatModel.objects.enabled().filter(realtime=realtime, embedding=embedding)
    if not realtime and not embedding:  # the upstream's list is checked for chat models, as in the picker
        models = models.served()
    models = models.allowed_to(user)
    return models if key is None else models.narrowed_to(key.allowed_models)


def api_model(
    request, model_id: str, *, param: str = "model", realtime: bool = False, embedding: bool = False
) -> ChatModel:
    """The model of this id if the request's caller may use it, else OpenAI's 404 model_not_found."""
    model = usable_model(model_id, user=request.api_user, key=request.api_key, realtime=realtime, embedding=embedding)
    if model is None:
        raise model_not_found(model_id, param=param)
    return model


def model_not_found(model_id: str, *, param: str = "model") -> ApiError:
    return ApiError(
        404,
        f"The model `{model_id}` does not exist or you do not have access to it.",
        code="model_not_found",
        param=param,
    )
