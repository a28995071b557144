"""CORS and CSRF for /v1, before Django's own CSRF check."""

import asyncio

from django.conf import settings
from django.http import HttpResponse
from django.utils.decorators import sync_and_async_middleware

# Endpoints a logged-in browser may call with its session (and so a CSRF token);
# every other /v1 call carries a Bearer key, which no other site can make a browser send.
SESSION_PATHS = {"/v1/realtime/client_secrets"}


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
