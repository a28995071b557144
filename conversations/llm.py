"""The one thin client of the upstream, an OpenAI-compatible Chat Completions API.

It reads the SSE lines itself with httpx and json.loads: the openai SDK's typed
chunk parsing costs about ten times as much per chunk, and this runs once per
token for every reply in flight. Tests point OPENAI_BASE_URL at our fake
upstream; nothing here is patched.
"""

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from django.conf import settings

from accounts.billing.metered import Usage

logger = logging.getLogger(__name__)


class UpstreamError(Exception):
    """A failure the user is told about in words they understand; `code` is stored on the reply."""

    def __init__(self, code: str, user_message: str, *, retry_after: float | None = None):
        super().__init__(user_message)
        self.code = code
        self.user_message = user_message
        self.retry_after = retry_after


def usage_from(usage: dict) -> Usage:
    """Our Usage from the upstream's usage object."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


@dataclass
class ReplyStream:
    """An open streamed reply: iterate for text deltas; usage and finish reason fill in as they arrive."""

    response: httpx.Response
    model_id: str
    usage: Usage | None = None
    finish_reason: str = ""

    async def chunks(self) -> AsyncIterator[tuple[str, dict]]:
        """Each chunk as the upstream sent it (its JSON text) and parsed, until [DONE]."""
        saw_done = False
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments (": keep-alive"), event names
                payload = line[5:].strip()
                if payload == "[DONE]":
                    # Read on to the end of the body (nothing more comes): a response read to its
                    # end hands its connection back to the pool, and the next reply skips a handshake.
                    saw_done = True
                    continue
                if saw_done:
                    continue
                try:
                    chunk = json.loads(payload)
                    self._note(chunk)
                except (ValueError, TypeError, KeyError, IndexError, AttributeError):
                    raise UpstreamError(
                        "malformed_chunk", "The model provider sent part of the reply in a form we could not read."
                    ) from None
                yield payload, chunk
        except httpx.ReadTimeout:
            raise UpstreamError(
                "timeout",
                f"The model provider went silent for {settings.UPSTREAM_READ_TIMEOUT:g} s, so the reply was cut off.",
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.NetworkError):
            raise UpstreamError(
                "stream_cut", "The connection to the model provider broke in the middle of the reply."
            ) from None
        if not saw_done:
            raise UpstreamError(
                "stream_incomplete",
                "The model provider ended the reply without confirming it was finished; it may be incomplete.",
            )

    async def deltas(self) -> AsyncIterator[str]:
        """The reply's text, piece by piece."""
        async for _, chunk in self.chunks():
            if chunk["choices"] and (text := chunk["choices"][0]["delta"].get("content")):
                yield text

    def _note(self, chunk: dict) -> None:
        """Keep the usage and finish reason; raise an error event as UpstreamError."""
        if "error" in chunk:
            error = chunk["error"] or {}
            raise UpstreamError(
                str(error.get("code") or "upstream_error"),
                f"The model provider reported an error mid-reply: {error.get('message') or 'no details given'}.",
            )
        if usage := chunk.get("usage"):
            self.usage = usage_from(usage)
        choices = chunk["choices"]
        if choices and choices[0].get("finish_reason"):
            self.finish_reason = choices[0]["finish_reason"]

    async def close(self) -> None:
        """Close the connection, so the provider stops generating (and billing) at once."""
        await self.response.aclose()


_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    # One pooled client per event loop: httpx connections belong to the loop that opened them.
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        for other in [other for other in _clients if other.is_closed()]:
            del _clients[other]
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
        _clients[loop] = client
    return client


async def reply_stream_open(*, model_id: str, messages: list[dict], max_tokens: int) -> ReplyStream:
    """Send a streamed request; returns once the upstream has accepted it (HTTP 200, SSE on the way)."""
    return await stream_open({"model": model_id, "messages": messages, "max_tokens": max_tokens})


async def stream_open(body: dict) -> ReplyStream:
    """Send any chat request streamed, always asking for usage so every call can be accounted."""
    body = body | {"stream": True, "stream_options": {"include_usage": True}}
    response = await _send(body, model_id=body["model"], stream=True)
    return ReplyStream(response=response, model_id=body["model"])


async def complete(*, model_id: str, messages: list[dict], max_tokens: int) -> tuple[str, Usage | None]:
    """A whole (not streamed) reply and its usage: for summaries, where nobody watches the tokens."""
    body = await completion_create({"model": model_id, "messages": messages, "max_tokens": max_tokens})
    text = body["choices"][0]["message"]["content"] or ""
    return text, usage_from(body["usage"]) if body.get("usage") else None


async def completion_create(body: dict) -> dict:
    """POST a non-streamed request; returns the upstream's chat.completion object, checked to have a reply."""
    response = await _send(body, model_id=body["model"])
    try:
        completion = response.json()
        if not isinstance(completion["choices"][0]["message"], dict):  # the one part every caller reads
            raise TypeError
    except (ValueError, TypeError, KeyError, IndexError):
        raise UpstreamError("malformed_chunk", "The model provider sent a reply we could not read.") from None
    return completion


async def client_secret_create(body: dict) -> dict:
    """POST a Realtime client secret request; returns the upstream's answer, checked to hold a secret and its expiry.

    The answer is a credential: nothing here logs it, nor the request's headers.
    """
    response = await _send(body, model_id=body["session"]["model"], path="realtime/client_secrets")
    try:
        answer = response.json()
        value, expires_at = answer["value"], answer["expires_at"]
        if not isinstance(value, str) or not value or isinstance(expires_at, bool) or not isinstance(expires_at, int):
            raise TypeError
        datetime.fromtimestamp(expires_at, UTC)  # a time Python can hold
    except (ValueError, TypeError, KeyError, OverflowError, OSError):
        raise UpstreamError("malformed_answer", "The model provider sent a client secret we could not read.") from None
    return answer


async def _send(body: dict, *, model_id: str, stream: bool = False, path: str = "chat/completions") -> httpx.Response:
    """POST to the upstream's `path` until it accepts.

    429 and 5xx answers are retried with exponential backoff, honouring
    Retry-After; every other failure raises UpstreamError at once.
    """
    headers = {"Authorization": f"Bearer {settings.OPENAI_API_KEY}"}
    url = f"{settings.OPENAI_BASE_URL}/{path}"
    client = _client()
    attempt = 0
    while True:
        request = client.build_request("POST", url, json=body, headers=headers)
        try:
            response = await client.send(request, stream=stream)
        except httpx.ConnectError:
            raise UpstreamError(
                "connection_failed", "Could not connect to the model provider. It may be down; try again shortly."
            ) from None
        except httpx.TimeoutException:
            raise UpstreamError(
                "timeout", "The model provider did not answer in time. Try again in a moment."
            ) from None
        except httpx.TransportError:
            raise UpstreamError(
                "connection_failed", "The model provider closed the connection before answering. Try again shortly."
            ) from None
        if response.status_code == 200:
            return response
        error = await _error_from(response, model_id)
        retryable = response.status_code == 429 or response.status_code >= 500
        delay = error.retry_after or settings.UPSTREAM_RETRY_BASE_DELAY * 2**attempt
        if not retryable or attempt >= settings.UPSTREAM_RETRIES or delay > settings.UPSTREAM_RETRY_MAX_WAIT:
            raise error
        attempt += 1
        logger.info("upstream answered %s, retry %s in %.1f s", response.status_code, attempt, delay)
        await asyncio.sleep(delay)


async def _error_from(response: httpx.Response, model_id: str) -> UpstreamError:
    try:
        await response.aread()
        detail = response.json().get("error") or {}
        if not isinstance(detail, dict):
            detail = {"message": str(detail)}
    except (ValueError, AttributeError, httpx.HTTPError):
        detail = {}
    finally:
        await response.aclose()
    status = response.status_code
    code = str(detail.get("code") or "")
    provider_says = str(detail.get("message") or "")[:300]
    retry_after = _retry_after_seconds(response.headers.get("retry-after"))
    if status == 429:
        wait = f"{retry_after:.0f} s" if retry_after else "a minute"
        if code == "insufficient_quota":
            return UpstreamError(
                "insufficient_quota",
                "The site's account with the model provider has run out of credit. Tell an administrator.",
            )
        return UpstreamError(
            "rate_limited", f"The model provider is rate limiting us. Try again in {wait}.", retry_after=retry_after
        )
    if status in (401, 403):
        return UpstreamError(
            "upstream_auth",
            "The model provider rejected the site's API key. An administrator needs to check OPENAI_API_KEY.",
        )
    if code == "context_length_exceeded":
        return UpstreamError(
            "context_length_exceeded",
            "This chat is longer than the model can read at once. "
            "Start a new chat, or pick a model with a larger context window.",
        )
    if status == 404:
        return UpstreamError("model_not_found", f"The model provider does not offer the model “{model_id}”.")
    if status >= 500:
        return UpstreamError(
            "upstream_unavailable",
            f"The model provider is having problems (HTTP {status}). Try again in a moment.",
            retry_after=retry_after,
        )
    return UpstreamError(
        "upstream_rejected",
        f"The model provider refused the request (HTTP {status}): {provider_says or 'no reason given'}.",
    )


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # the other form Retry-After may take: an HTTP date
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
