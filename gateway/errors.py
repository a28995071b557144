"""OpenAI's error format, in which every /v1 answer that is not a success is given."""

import json
import math

from django.http import JsonResponse

from conversations.llm import UpstreamError


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


def stream_error_event(error: UpstreamError) -> bytes:
    _, type, code = UPSTREAM_ERRORS.get(error.code, (502, "server_error", "upstream_error"))
    body = {"error": {"message": error.user_message, "type": type, "param": None, "code": code or error.code}}
    return f"data: {json.dumps(body)}\n\n".encode()
