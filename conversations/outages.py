"""PostgreSQL or Redis out of reach: every request is told so with a 503, and /healthz says which.

Nothing here retries or waits: the pool replaces broken database connections
(see DATABASES in settings and conversations/db.py), redis-py reconnects on
the next command, so the site recovers by itself once they answer again.
"""

import redis.exceptions
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.utils.deprecation import MiddlewareMixin
from django.utils.log import log_response
from django.views.decorators.http import require_GET
from django_htmx.http import reswap, retarget

from conversations.db import db_step
from gateway.errors import ApiError

# Django raises OperationalError when PostgreSQL refuses or drops a connection, and
# when no pooled connection came free in DB_POOL_TIMEOUT (the pool's PoolTimeout);
# InterfaceError when a connection it still held had been closed under it.
DATABASE_ERRORS = (OperationalError, InterfaceError)
# redis-py (the cache, rate limits, the channels layer) wraps socket failures in its
# own ConnectionError and TimeoutError; a refused or reset socket can still surface
# as the builtin ConnectionError.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)
RETRY_AFTER_SECONDS = 5
WHAT_FAILED = {"database": "its database", "redis": "its cache (Redis)"}


def unreachable_part(error: BaseException) -> str | None:
    """ "database" or "redis" when the error means that part cannot be reached, else None."""
    if isinstance(error, DATABASE_ERRORS):
        return "database"
    if isinstance(error, REDIS_ERRORS):
        return "redis"
    return None


def outage_response(request: HttpRequest, part: str) -> HttpResponse:
    """The 503: OpenAI's error JSON on /v1, the composer's error slot for htmx, else a page.

    Rendered here, without the user: with the sessions in the database,
    request.user is one of the things that cannot be loaded.
    """
    text = f"The site cannot reach {WHAT_FAILED[part]} right now. Try again in a few seconds."
    if request.path.startswith("/v1/"):
        response = ApiError(503, text, type="server_error", code="service_unavailable").response()
    elif request.htmx:
        context = {"composer_errors": [text]}
        response = TemplateResponse(request, "conversations/chat.html#composer-errors", context, status=503)
        response = reswap(retarget(response.render(), "#composer-errors"), "innerHTML")
    else:
        response = TemplateResponse(request, "503.html", {"text": text}, status=503).render()
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class OutageMiddleware(MiddlewareMixin):
    """Turns a view's database or Redis connection failure into the 503 of outage_response.

    Django passes process_exception what a view (or the rendering of its
    template) raised, in sync and async views alike; whatever the view had
    sent upstream by then is its own to settle.
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        part = unreachable_part(exception)
        if part is None:
            return None
        response = outage_response(request, part)
        # One line per request, with the cause and without a traceback: an
        # outage would otherwise bury the log in identical ones.
        log_response(
            "%s %s: %s unreachable (%s: %s)",
            request.method,
            request.path,
            part,
            type(exception).__name__,
            str(exception).strip(),
            response=response,
            request=request,
            level="warning",
        )
        return response


def _database_connect() -> None:
    # The pool checks a connection with a round trip before handing it out.
    connection.ensure_connection()


async def _redis_ping() -> None:
    await sync_to_async(cache.get)("healthz")
    # Frames of replies fan out through the channels layer: publish to a group nobody watches.
    await get_channel_layer().group_send("healthz", {"type": "healthz.ping"})


async def _check(step) -> str:
    try:
        await step
    except Exception as error:  # whatever the client raised, this part cannot serve replies now
        return f"error: {type(error).__name__}"
    return "ok"


@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when this process can do what replies need; a load balancer takes it out of rotation otherwise.

    The database is checked through db_step, on the thread and pool that save
    replies; Redis (cache and channels layer) when it is configured.
    """
    checks = {"database": await _check(db_step(_database_connect))}
    if settings.REDIS_URL:
        checks["redis"] = await _check(_redis_ping())
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks}, status=200 if healthy else 503)
