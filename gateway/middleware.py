"""CORS and CSRF for /v1, and OpenAI's error JSON for whatever a /v1 view did not answer itself."""

import asyncio
from http import HTTPStatus

from django.conf import settings
from django.http import HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.decorators import sync_and_async_middleware

from gateway.errors import ApiError


class _CsrfRefusal(CsrfViewMiddleware):
    def _reject(self, request, reason):
        raise ApiError(403, f"CSRF verification failed: {reason}", code="csrf_failed")


def csrf_check(request) -> None:
    """Django's CSRF check, for a caller who comes with a session instead of a key; its refusal is OpenAI's 403.

    /v1 views are exempt from CsrfViewMiddleware, whose refusal is an HTML
    page, and call this where a session may stand in for a key.
    """
    _CsrfRefusal(lambda request: None).process_view(request, None, (), {})


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
    response["Access-Control-Allow-Headers"] = requested or "authorization, api-key, content-type"
    response["Access-Control-Max-Age"] = "600"
    return _cors_headers(response, request.headers.get("Origin", ""))


def _as_openai_error(response: HttpResponse) -> HttpResponse:
    """A refusal made outside any /v1 view's decorator, as that decorator would have written it."""
    status = response.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    type = "server_error" if status >= 500 else "invalid_request_error"
    error = ApiError(status, f"{phrase} (HTTP {status}).", type=type).response()
    for header in ("Retry-After", "Allow"):
        if header in response:
            error[header] = response[header]
    return error


@sync_and_async_middleware
def api_middleware(get_response):
    """For /v1: CORS for the configured origins (a Flutter web build calls from its own origin), and every
    refusal in OpenAI's error JSON, even one made before any view ran (a body too large, say) or an HTML page
    of Django's (a crash).
    """

    def before(request) -> HttpResponse | None:
        if not request.path.startswith("/v1/"):
            return None
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(request)
        return None

    def after(request, response):
        if request.path.startswith("/v1/"):
            if response.status_code >= 400 and response.get("Content-Type") != "application/json":
                response = _as_openai_error(response)
            _cors_headers(response, request.headers.get("Origin", ""))
        return response

    if asyncio.iscoroutinefunction(get_response):

        async def middleware(request):
            return before(request) or after(request, await get_response(request))

    else:

        def middleware(request):
            return before(request) or after(request, get_response(request))

    return middleware
