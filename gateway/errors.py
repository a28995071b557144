"""OpenAI's error format, in which every /v1 answer that is not a success is given.

Code anywhere under a /v1 view raises ApiError; the view's decorator
(gateway/decorators.py) turns it into the answer. The provider's own errors
(UpstreamError) become ApiErrors here, in one of two ways: passed through as
the provider said them, for the calls an app's SDK makes through us, or in the
site's words, where the site itself asked the provider (a realtime mint).
"""

import json
import math

from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from accounts.billing.budget import QuotaExceeded
from conversations.llm import UpstreamError


class ApiError(Exception):
    """A /v1 request refused: the status and OpenAI's error object, so each SDK raises its matching exception."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status, headers=self.headers)
        if self.retry_after is not None:
            response["Retry-After"] = str(max(math.ceil(self.retry_after), 1))
        return response


def quota_error(exceeded: QuotaExceeded) -> ApiError:
    """A user's own limit used up: 429 insufficient_quota, with the wait until the limit's window resets.

    SDKs do not retry a Retry-After longer than they are willing to wait, so an
    app is not sent back for a quota that resets tonight.
    """
    wait = (exceeded.resets_at - timezone.now()).total_seconds()
    return ApiError(
        429, exceeded.user_message, type="insufficient_quota", code="insufficient_quota", retry_after=max(wait, 1)
    )


# How an upstream failure is told in the site's words: (status, type, code).
UPSTREAM_ERRORS = {
    "rate_limited": (429, "requests", "rate_limit_exceeded"),
    "context_length_exceeded": (400, "invalid_request_error", "context_length_exceeded"),
    "upstream_rejected": (400, "invalid_request_error", None),
    "model_not_found": (404, "invalid_request_error", "model_not_found"),
    "upstream_unavailable": (503, "server_error", "upstream_unavailable"),
    "insufficient_quota": (503, "server_error", "upstream_unavailable"),
}
UNKNOWN_FAILURE = (502, "server_error", "upstream_error")

# Failures of the site's own account with the provider (its key, its credit): an app hearing the
# provider's 401 or insufficient_quota would blame its own key or quota, so these stay in our words.
_SITES_OWN = {"upstream_auth", "insufficient_quota"}


def upstream_in_our_words(error: UpstreamError) -> ApiError:
    status, type, code = UPSTREAM_ERRORS.get(error.code, UNKNOWN_FAILURE)
    retry_after = error.retry_after if status in (429, 503) else None
    return ApiError(status, error.user_message, type=type, code=code, retry_after=retry_after)


def upstream_passed_through(error: UpstreamError) -> ApiError:
    """The provider's status, message, type, code and param as it answered them (scrubbed of our key and URL).

    So an app gets from us what it would from the provider, and its client
    library raises the same exception (litellm's ContextWindowExceededError
    reads the provider's message). Failures where the provider said nothing (a
    timeout, a cut connection) and those of the site's own account are told
    in our words.
    """
    said = error.provider_error
    if error.status is None or not said or error.code in _SITES_OWN:
        return upstream_in_our_words(error)
    ours = upstream_in_our_words(error)
    return ApiError(
        error.status,
        str(said.get("message") or ours.message),
        type=str(said.get("type") or ours.type),
        # Only plain values: an object in these fields would break the SDKs that read them as strings.
        code=said.get("code") if isinstance(said.get("code"), str | int | None) else None,
        param=said.get("param") if isinstance(said.get("param"), str | None) else None,
        retry_after=error.retry_after,
    )


def stream_error_event(error: UpstreamError) -> bytes:
    """The SSE event that ends a relayed stream cut by `error`: the provider's own error object if it sent one."""
    if error.provider_error:
        body = {"error": error.provider_error}
    else:
        ours = upstream_in_our_words(error)
        body = {"error": {"message": ours.message, "type": ours.type, "param": None, "code": ours.code or error.code}}
    return f"data: {json.dumps(body)}\n\n".encode()


@csrf_exempt  # it only ever refuses
def unknown_path(request) -> JsonResponse:
    """The answer for a /v1 path that names no endpoint, in OpenAI's words."""
    return ApiError(404, f"Invalid URL ({request.method} {request.path})").response()
