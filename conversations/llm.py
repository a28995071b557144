"""The one thin client of the upstream, an OpenAI-compatible API, through the official openai SDK.

The SDK's AsyncOpenAI sends every request: its connection pool, timeouts,
retries with backoff and Retry-After, and its error classes, which become
UpstreamError here, in words a user understands. Requests go through its
generic `post()` with the body exactly as the caller built it (the typed
`create()` would transform every message on each call, and a field it does not
know would have to travel in `extra_body`). Streams are read raw, as
`with_streaming_response` reads them: the SSE events are split from the bytes
of each network read by hand, and nothing is parsed into typed objects, which
would cost about ten times a json.loads, once per token for every reply in
flight. Tests point OPENAI_BASE_URL at our fake upstream; nothing here is patched.
"""

import asyncio
import contextlib
import contextvars
import json
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
from django.conf import settings

from accounts.billing.metered import Usage
from conversations.upstream_socket import AsyncioHttpxClient, AsyncioStream

# A reader in frames has the upstream's socket left unread for at most this long at a time (ReplyStream.read_before).
READ_HELD_AT_MOST = 0.1


class UpstreamError(Exception):
    """A failure the user is told about in words they understand; `code` is stored on the reply.

    `status` (the provider's HTTP status) and `provider_error` (its error object,
    scrubbed of our key and base URL) let the /v1 gateway pass the provider's own
    error on; both are None when the provider said nothing (a timeout, a cut).
    """

    def __init__(
        self,
        code: str,
        user_message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        provider_error: dict | None = None,
    ):
        super().__init__(user_message)
        self.code = code
        self.user_message = user_message
        self.retry_after = retry_after
        self.status = status
        self.provider_error = provider_error


def usage_from(usage: dict) -> Usage:
    """Our Usage from the upstream's usage object."""
    details = usage.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


# The only chunks raw_events() parses: those with a usage object, a finish reason
# or an error. Content chunks carry `"usage":null` and `"finish_reason":null`;
# the optional space is for servers that write JSON with Python's default separators.
_WORTH_PARSING = re.compile(rb'"(?:usage": ?\{|finish_reason": ?"|error")')
# Where a chunk's text starts, in the shapes OpenAI and llama.cpp send: the delta's content first, or after the
# role. A string value cannot hold these quotes unescaped, so only the delta's own key matches.
_CONTENT_TEXT = re.compile(rb'"delta": ?\{(?:"role": ?"assistant", ?)?"content": ?"')


@dataclass
class ReplyStream:
    """An open streamed reply: iterate for text deltas; usage and finish reason fill in as they arrive."""

    response: httpx2.Response
    model_id: str
    usage: Usage | None = None
    finish_reason: str = ""
    # The model the upstream says answered (each chunk's `model`), which may not be the one asked for.
    reported_model: str = ""

    async def raw_events(self) -> AsyncIterator[bytes]:
        """Each SSE event's bytes exactly as the upstream sent them (b"data: {...}\\n\\n"), until [DONE].

        The [DONE] event itself is not passed on: the caller ends its own stream.
        Only events that can carry usage, a finish reason or an error are parsed;
        the others are checked to be a JSON object at a glance (its braces).
        """
        async for event, data in self._events():
            if data is not None:
                if _WORTH_PARSING.search(data):
                    self._take(data)
                elif not (data.startswith(b"{") and data.endswith(b"}")):
                    raise _malformed_chunk()
            yield event

    async def chunks(self) -> AsyncIterator[tuple[str, dict]]:
        """Each chunk as the upstream sent it (its JSON text) and parsed, until [DONE]."""
        async for _, data in self._events():
            if data is not None:
                text = data.decode()
                yield text, self._take(text)

    async def deltas(self) -> AsyncIterator[str]:
        """The reply's text, piece by piece (read from the events themselves: one generator less per token)."""
        async for _, data in self._events():
            if data is not None and (text := self._text_of(data)):
                yield text

    def _text_of(self, data: bytes) -> str:
        """A chunk's text ("" for none). The parsed chunk is let go here, not held while the next one is awaited:
        about 2 KB for every reply being generated.

        Nearly every chunk is only text: its delta's string is read where it
        stands, and the rest of the chunk is not parsed (a few µs a token).
        The first chunk (for the model that answers) and any that may carry
        usage, a finish reason or an error are parsed whole.
        """
        if (
            self.reported_model
            and data.endswith(b"}")
            and (text_at := _CONTENT_TEXT.search(data))
            and not _WORTH_PARSING.search(data)
        ):
            with contextlib.suppress(ValueError):  # not a string after all: parsed whole below, which says so
                rest = data[text_at.end() :].decode()
                text, end = json.decoder.scanstring(rest, 0)
                if rest[end:].lstrip()[:1] in ("}", ","):  # and the delta goes on as JSON does
                    return text
        chunk = self._take(data)
        if not chunk["choices"]:
            return ""
        try:
            return chunk["choices"][0]["delta"].get("content") or ""
        except _UNREADABLE:
            raise _malformed_chunk() from None

    async def close(self) -> None:
        """Close the connection, so the provider stops generating (and billing) at once."""
        await self.response.aclose()

    def read_before(self, next_frame_at: float) -> None:
        """Read nothing more until shortly before the caller's next frame (the loop's time), then all that came.

        For a reader that passes the text on in frames (the /v1 relay, the
        chat's fan-out): the tokens that come while a frame waits are read in
        one piece rather than one at a time (AsyncioStream.hold). The hold
        ends at the frame's time, and at most READ_HELD_AT_MOST after it
        starts, so that a long frame interval cannot hold back the reply's end.
        The frame then goes as soon as that one read is parsed, a fraction of a
        millisecond late: a hold that ended earlier, to have the text parsed in
        time, had every token that came in that margin read on its own.
        """
        network = self.response.extensions.get("network_stream")
        if not isinstance(network, AsyncioStream):
            return  # a connection of another transport (a proxy's tunnel, a test's): read as it comes
        now = asyncio.get_running_loop().time()
        until = min(next_frame_at, now + READ_HELD_AT_MOST)
        if until > now:
            network.hold(until)

    async def _events(self) -> AsyncIterator[tuple[bytes, bytes | None]]:
        """Each SSE event with the blank line that ends it, and its data (None for a comment), until [DONE].

        Reads as few, as large, pieces as the connection delivers: an event split
        across reads waits for its end, several in one read come out one by one.
        """
        saw_done = False
        pending = b""
        separator = b""  # b"\n\n" from OpenAI, b"\r\n\r\n" from some servers (llama.cpp's)
        try:
            async for data in self._body():
                if saw_done:
                    # Read on to the end of the body (nothing more comes): a response read to its
                    # end hands its connection back to the pool, and the next reply skips a handshake.
                    continue
                pending += data
                if not separator:
                    if (newline := pending.find(b"\n")) < 0:
                        continue
                    separator = b"\r\n\r\n" if pending[newline - 1 : newline] == b"\r" else b"\n\n"
                start = 0
                while (end := pending.find(separator, start)) >= 0:
                    event, start = pending[start : end + len(separator)], end + len(separator)
                    data = _data_of(event)
                    if data == b"[DONE]":
                        saw_done = True
                        break
                    if event != separator:
                        yield event, data
                pending = pending[start:]
        except httpx2.TimeoutException:
            raise UpstreamError(
                "timeout",
                f"The model provider went silent for {settings.UPSTREAM_READ_TIMEOUT:g} s, so the reply was cut off.",
            ) from None
        except httpx2.TransportError:
            raise UpstreamError(
                "stream_cut", "The connection to the model provider broke in the middle of the reply."
            ) from None
        if not saw_done and _data_of(pending.strip()) != b"[DONE]":  # [DONE] may end the body without a blank line
            raise UpstreamError(
                "stream_incomplete",
                "The model provider ended the reply without confirming it was finished; it may be incomplete.",
            )

    def _body(self) -> AsyncIterator[bytes]:
        """The body's bytes as the connection delivers them.

        An SSE body has no content encoding (OpenAI's has none) and is then read
        from the response's stream itself: httpx's aiter_bytes and aiter_raw
        are two more async generators (and three plain ones) each network read
        passes through, only to undo an encoding and cut fixed-size chunks,
        which this reader asks for neither of. An encoded body is decoded by
        httpx as usual.
        """
        if self.response.headers.get("content-encoding", "identity").strip().lower() == "identity":
            return self.response.stream.__aiter__()
        return self.response.aiter_bytes()

    def _take(self, data: bytes | str) -> dict:
        """The chunk parsed, its usage and finish reason kept; an error event raised as UpstreamError."""
        try:
            chunk = json.loads(data)
            if "error" in chunk:
                error = _provider_error(chunk["error"]) or {}
                raise UpstreamError(
                    str(error.get("code") or "upstream_error"),
                    f"The model provider reported an error mid-reply: {error.get('message') or 'no details given'}.",
                    provider_error=error or None,
                )
            if usage := chunk.get("usage"):
                self.usage = usage_from(usage)
            if isinstance(model := chunk.get("model"), str):
                self.reported_model = model[:100]
            choices = chunk["choices"]
            if choices and choices[0].get("finish_reason"):
                self.finish_reason = choices[0]["finish_reason"]
        except _UNREADABLE:
            raise _malformed_chunk() from None
        return chunk


def _data_of(event: bytes) -> bytes | None:
    """An SSE event's data, or None when it has none (a comment such as ": keep-alive")."""
    if event.startswith(b"data:") and event.find(b"\n") >= len(event) - 4:  # one data line: nearly every event
        return event[5:].strip()
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


# What reading a chunk that is not the shape OpenAI's are raises: such a chunk ends the reply as malformed.
_UNREADABLE = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def _malformed_chunk() -> UpstreamError:
    return UpstreamError("malformed_chunk", "The model provider sent part of the reply in a form we could not read.")


class _OpenAIWithOurRetries(openai.AsyncOpenAI):
    """AsyncOpenAI with the site's retry policy, set through the SDK's own retry hooks.

    Only answers that ask to be tried again later (429, 5xx) are retried, and
    only when the provider's Retry-After (or retry-after-ms) is one we accept to
    wait: a longer one ends the call at once, so the user hears when to try
    again instead of watching nothing for a minute. Without Retry-After the
    backoff starts at UPSTREAM_RETRY_BASE_DELAY. The SDK sends no Idempotency-Key
    to OpenAI-style APIs, so each retry is one more request, no more.
    """

    @property
    def user_agent(self) -> str:
        return f"AsyncOpenAI/Python {self._version}"  # the SDK names itself after the class

    @property
    def default_headers(self) -> dict[str, str | openai.Omit]:
        # Without the SDK's X-Stainless-* headers (the server's OS, CPU and Python, the SDK's version,
        # async or not; per call, its retry count and read timeout: see NO_TELEMETRY): nothing a provider
        # needs to answer, and more than half of each request's headers, built, checked and held again
        # for every call and every open stream.
        return {name: value for name, value in super().default_headers.items() if not name.startswith("X-Stainless")}

    def _should_retry(self, response: httpx2.Response) -> bool:
        if response.status_code != 429 and response.status_code < 500:
            return False  # 401 and 403 above all: the key will not get better by asking again
        wait = self._parse_retry_after_header(response.headers)
        return wait is None or wait <= settings.UPSTREAM_RETRY_MAX_WAIT

    def _calculate_retry_timeout(
        self, remaining_retries: int, options: Any, response_headers: httpx2.Headers | None = None
    ) -> float:
        wait = self._parse_retry_after_header(response_headers)
        if wait is not None and wait > 0:
            return wait  # within UPSTREAM_RETRY_MAX_WAIT, or _should_retry said no
        retries_taken = self.max_retries - remaining_retries
        # Up to a quarter less at random, like the SDK, so clients turned away together come back apart.
        return settings.UPSTREAM_RETRY_BASE_DELAY * 2**retries_taken * (1 - 0.25 * random.random())

    async def _send_request(self, request: httpx2.Request, *, stream: bool, **kwargs: Any) -> httpx2.Response:
        if (sent := on_request_sent.get()) is not None:
            request.extensions["trace"] = _telling_when_sent(sent)
        # A request that failed on the way is not sent again, as the SDK would send it: the provider
        # may be generating (and billing) an answer already, and a user should hear at once that
        # the provider is unreachable, not after every retry's timeout. The SDK passes its own
        # errors on without retrying them.
        try:
            return await super()._send_request(request, stream=stream, **kwargs)
        except httpx2.TimeoutException as error:
            raise openai.APITimeoutError(request=request) from error
        except httpx2.TransportError as error:
            raise openai.APIConnectionError(request=request) from error


# Called once a request has been written to the provider whole: from then on the provider may bill it,
# even if we never read its answer. A caller sets it (in its own context) before calling.
on_request_sent: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "on_request_sent", default=None
)


def _telling_when_sent(sent: Callable[[], None]):
    """An httpcore trace hook that calls `sent` when the request's body has been written."""

    async def trace(event: str, info: dict) -> None:
        if event.endswith("send_request_body.complete"):
            sent()

    return trace


_clients: dict[tuple, _OpenAIWithOurRetries] = {}

# The two X-Stainless headers the SDK adds to each request unless a caller's own headers name them.
NO_TELEMETRY = {"X-Stainless-Retry-Count": openai.Omit(), "X-Stainless-Read-Timeout": openai.Omit()}


def _client() -> _OpenAIWithOurRetries:
    # One client (and connection pool) per event loop, since httpx connections belong to the loop
    # that opened them, and per upstream setting, which tests change from one test to the next.
    loop = asyncio.get_running_loop()
    key = (
        loop,
        settings.OPENAI_BASE_URL,
        settings.OPENAI_API_KEY,
        settings.UPSTREAM_RETRIES,
        settings.UPSTREAM_CONNECT_TIMEOUT,
        settings.UPSTREAM_READ_TIMEOUT,
    )
    client = _clients.get(key)
    if client is None:
        for stale in [stale for stale in _clients if stale[0].is_closed()]:
            del _clients[stale]
        timeout = httpx2.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT)
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=100)
        client = _clients[key] = _OpenAIWithOurRetries(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL,
            max_retries=settings.UPSTREAM_RETRIES,
            timeout=timeout,
            # The SDK's default pool stops at 1,000 connections; a process holds up to 2,000 streams.
            http_client=AsyncioHttpxClient(timeout=timeout, limits=limits),
        )
    return client


async def reply_stream_open(
    *, model_id: str, messages: list[dict], max_tokens: int, token_limit_param: str = "max_tokens"
) -> ReplyStream:
    """Send a streamed request; returns once the upstream has accepted it (HTTP 200, SSE on the way).

    `token_limit_param`: the name the model takes `max_tokens` under (reasoning models: max_completion_tokens).
    """
    return await stream_open({"model": model_id, "messages": messages, token_limit_param: max_tokens})


async def stream_open(body: dict, *, retry: bool = True) -> ReplyStream:
    """Send any chat request streamed, always asking for usage so every call can be accounted.

    `retry=False` for an app's SDK, which retries by itself and hears the provider's Retry-After from us:
    retried here too, one SDK call would make retries times retries upstream requests.
    """
    stream_options = body.get("stream_options")
    stream_options = (stream_options if isinstance(stream_options, dict) else {}) | {"include_usage": True}
    body = body | {"stream": True, "stream_options": stream_options}
    response = await _post("chat/completions", body, model_id=body["model"], stream=True, retry=retry)
    return ReplyStream(response=response, model_id=body["model"])


async def complete(
    *, model_id: str, messages: list[dict], max_tokens: int, token_limit_param: str = "max_tokens"
) -> tuple[str, Usage | None]:
    """A whole (not streamed) reply and its usage: for summaries, where nobody watches the tokens."""
    body = await completion_create({"model": model_id, "messages": messages, token_limit_param: max_tokens})
    text = body["choices"][0]["message"]["content"] or ""
    return text, usage_from(body["usage"]) if body.get("usage") else None


async def completion_create(body: dict, *, retry: bool = True) -> dict:
    """POST a non-streamed request; returns the upstream's chat.completion object, checked to have a reply.

    `retry` as for stream_open.
    """
    response = await _post("chat/completions", body, model_id=body["model"], retry=retry)
    try:
        completion = response.json()
        if not isinstance(completion["choices"][0]["message"], dict):  # the one part every caller reads
            raise TypeError
    except (ValueError, TypeError, KeyError, IndexError):
        raise UpstreamError("malformed_chunk", "The model provider sent a reply we could not read.") from None
    return completion


async def model_ids_list() -> frozenset[str]:
    """The ids of the models the upstream lists at GET /models."""
    client = _client()
    try:
        response = await client.get("models", cast_to=httpx2.Response)
    except openai.APIConnectionError as error:
        raise _transport_error(error) from None
    except openai.APIStatusError as error:
        raise _status_error(error, "", client) from None
    try:
        return frozenset(str(model["id"]) for model in response.json()["data"])
    except (ValueError, TypeError, KeyError):
        raise UpstreamError("malformed_answer", "The model provider sent a model list we could not read.") from None


async def tokens_count(text: str) -> int:
    """How many tokens llama-cpp-python's server makes of `text` (its POST /extras/tokenize/count).

    Other providers have no such endpoint: UpstreamError (a 404) from them.
    """
    root = settings.OPENAI_BASE_URL.removesuffix("/v1")
    response = await _post(f"{root}/extras/tokenize/count", {"input": text}, model_id="")
    try:
        count = response.json()["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TypeError
    except (ValueError, TypeError, KeyError):
        raise UpstreamError("malformed_answer", "The model provider sent a token count we could not read.") from None
    return count


async def embeddings_create(body: dict) -> dict:
    """POST an embeddings request; returns the upstream's answer, checked to hold one embedding per item of data.

    Not retried here: only apps call it, and their SDKs retry by themselves (see stream_open).
    """
    response = await _post("embeddings", body, model_id=body["model"], retry=False)
    try:
        answer = response.json()
        if not isinstance(answer["data"], list) or not all(
            isinstance(item, dict) and isinstance(item["embedding"], list | str) for item in answer["data"]
        ):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        raise UpstreamError("malformed_answer", "The model provider sent embeddings we could not read.") from None
    return answer


async def client_secret_create(body: dict) -> dict:
    """POST a Realtime client secret request; returns the upstream's answer, checked to hold a secret and its expiry.

    The answer is a credential: nothing here logs it, nor the request's headers.
    """
    response = await _post("realtime/client_secrets", body, model_id=body["session"]["model"])
    try:
        answer = response.json()
        value, expires_at = answer["value"], answer["expires_at"]
        if not isinstance(value, str) or not value or isinstance(expires_at, bool) or not isinstance(expires_at, int):
            raise TypeError
        datetime.fromtimestamp(expires_at, UTC)  # a time Python can hold
    except (ValueError, TypeError, KeyError, OverflowError, OSError):
        raise UpstreamError("malformed_answer", "The model provider sent a client secret we could not read.") from None
    return answer


async def _post(path: str, body: dict, *, model_id: str, stream: bool = False, retry: bool = True) -> httpx2.Response:
    """POST `body` unchanged to the upstream's `path`, retried by the SDK unless not to `retry`; its 200 response,
    unread if `stream`."""
    client = _client()
    options = {"headers": NO_TELEMETRY} | ({} if retry else {"max_retries": 0})
    try:
        response = await client.post(path, body=body, cast_to=httpx2.Response, stream=stream, options=options)
    except openai.APIConnectionError as error:  # APITimeoutError included
        raise _transport_error(error) from None
    except openai.APIStatusError as error:
        raise _status_error(error, model_id, client) from None
    if stream:
        _sent_body_let_go(response.request)
    return response


def _sent_body_let_go(request: httpx2.Request) -> None:
    """Empty the body of a request the provider has answered.

    A stream's response keeps its request until the stream ends, and the
    request its body: the whole prompt serialized, as large again as the
    chat it came from, for every reply being generated and every /v1 stream.
    Nothing reads it once the answer has come (the SDK's retries are over).
    httpx keeps the body twice, read (`_content`) and as the stream it was
    sent from, which its transport shares: test_upstream_client.py checks
    that neither is left.
    """
    request._content = b""
    if isinstance(request.stream, httpx2.ByteStream):
        request.stream._stream = b""


def _transport_error(error: openai.APIConnectionError) -> UpstreamError:
    if isinstance(error, openai.APITimeoutError):
        return UpstreamError("timeout", "The model provider did not answer in time. Try again in a moment.")
    if isinstance(error.__cause__, httpx2.ConnectError):
        return UpstreamError(
            "connection_failed", "Could not connect to the model provider. It may be down; try again shortly."
        )
    return UpstreamError(
        "connection_failed", "The model provider closed the connection before answering. Try again shortly."
    )


def _status_error(error: openai.APIStatusError, model_id: str, client: _OpenAIWithOurRetries) -> UpstreamError:
    """The provider's error answer in the user's words, with its status and error object kept."""
    status = error.status_code
    provider_error = _provider_error(error.body)
    detail = provider_error or {}
    code = str(detail.get("code") or "")
    retry_after = client._parse_retry_after_header(error.response.headers)
    retry_after = max(retry_after, 0.0) if retry_after is not None else None
    provider_said = {"status": status, "provider_error": provider_error}
    if isinstance(error, openai.RateLimitError):
        if code == "insufficient_quota":
            return UpstreamError(
                "insufficient_quota",
                "The site's account with the model provider has run out of credit. Tell an administrator.",
                **provider_said,
            )
        wait = f"{retry_after:.0f} s" if retry_after else "a minute"
        return UpstreamError(
            "rate_limited",
            f"The model provider is rate limiting us. Try again in {wait}.",
            retry_after=retry_after,
            **provider_said,
        )
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamError(
            "upstream_auth",
            "The model provider rejected the site's API key. An administrator needs to check OPENAI_API_KEY.",
            **provider_said,
        )
    if code == "context_length_exceeded":
        return UpstreamError(
            "context_length_exceeded",
            "This chat is longer than the model can read at once. "
            "Start a new chat, or pick a model with a larger context window.",
            **provider_said,
        )
    if isinstance(error, openai.NotFoundError):
        return UpstreamError(
            "model_not_found", f"The model provider does not offer the model “{model_id}”.", **provider_said
        )
    if isinstance(error, openai.InternalServerError):
        return UpstreamError(
            "upstream_unavailable",
            f"The model provider is having problems (HTTP {status}). Try again in a moment.",
            retry_after=retry_after,
            **provider_said,
        )
    provider_says = str(detail.get("message") or "")[:300]
    return UpstreamError(
        "upstream_rejected",
        f"The model provider refused the request (HTTP {status}): {provider_says or 'no reason given'}.",
        **provider_said,
    )


def _provider_error(error: object) -> dict | None:
    """The provider's error object (from an error answer or a mid-stream event), its text scrubbed of our secrets."""
    if not error:
        return None
    if not isinstance(error, dict):  # a body that was not JSON: a proxy's HTML page, say
        error = {"message": str(error)[:1000]}
    return {name: _scrubbed(value) if isinstance(value, str) else value for name, value in error.items()}


def _scrubbed(text: str) -> str:
    """`text` without the provider key or base URL, which an app of ours must never see."""
    key, base_url = settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL
    for secret in (key, base_url, urlsplit(base_url).netloc):
        if secret:
            text = text.replace(secret, "[redacted]")
    if len(key) >= 12:
        # Providers quote a key masked ("sk-proj-abc***", "sk-upstr***"): hide any word that starts like ours.
        text = re.sub(re.escape(key[:6]) + r"\S*", "[redacted]", text)
    return text
