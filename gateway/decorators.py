"""The one decorator of every /v1 endpoint: the method, the caller, and OpenAI's error JSON for any refusal."""

from collections.abc import Awaitable, Callable
from functools import wraps

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt

from conversations.db import db_step
from gateway.auth import NO_KEY, caller_authenticate, key_secret, sends_a_key
from gateway.errors import ApiError
from gateway.middleware import csrf_check
from gateway.schema import json_body_parse

View = Callable[..., Awaitable[HttpResponse]]


def api_view(*, methods: tuple[str, ...], authenticate: bool = True, session: bool = False) -> Callable[[View], View]:
    """A /v1 view: other methods get a 405, the caller is attached, and an ApiError raised anywhere is the answer.

    The caller is `request.api_user` and `request.api_key`. With `authenticate`
    the key is checked before the view runs; without it only its secret is read
    (`request.api_secret`, a 401 if none) and the view's own database step must
    call gateway.auth.caller_authenticate first: a streamed call makes one
    database round trip before it goes upstream, not two. With `session`, a
    logged-in browser may call with its session and CSRF token instead of a key.
    """

    def decorate(view: View) -> View:
        @csrf_exempt  # key callers need no CSRF token (no other site can make a browser send the key); see _identify
        @wraps(view)
        async def api_endpoint(request, *args, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(
                        405, f"Use {' or '.join(methods)} for {request.path}.", headers={"Allow": ", ".join(methods)}
                    )
                await _identify(request, authenticate=authenticate, session=session)
                return await view(request, *args, **kwargs)
            except ApiError as error:
                return error.response()

        return api_endpoint

    return decorate


async def _identify(request, *, authenticate: bool, session: bool) -> None:
    """Attach the caller: the logged-in user (where `session` allows and no key is sent), else the key's owner.

    A request that sends key credentials is judged by them alone: a session
    must not stand in for a bad key, since such requests skip the CSRF check.
    """
    request.api_user = request.api_key = None
    if session and not sends_a_key(request):
        user = await request.auser()
        if user.is_authenticated:
            csrf_check(request)
            request.api_user = user
            return
    request.api_secret = key_secret(request)
    if not request.api_secret:
        raise ApiError(401, NO_KEY, code="invalid_api_key")
    if authenticate:
        await db_step(caller_authenticate, request)


def json_body(request, *, empty=None):
    """The request's JSON body (`empty` for no body at all), or OpenAI's 400 for one that is not strict JSON
    (gateway/schema.py)."""
    try:
        body = request.body
    except RequestDataTooBig:
        most = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 2**20
        message = f"The request body is larger than this site accepts ({most:g} MB): send large images by https URL."
        raise ApiError(413, message, code="request_too_large") from None
    if not body and empty is not None:
        return empty
    return json_body_parse(body)
