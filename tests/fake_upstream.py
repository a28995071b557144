"""A fake OpenAI-compatible upstream: a real HTTP server on loopback with scripted faults.

Tests and benchmarks point the site (or the openai SDK) at ``FakeUpstream().base_url``
instead of a paid API. It speaks the Chat Completions wire format byte for byte like
OpenAI does, so whatever parses it here parses the real thing. It also mints Realtime
client secrets (POST /v1/realtime/client_secrets), answering ``ek_...`` like OpenAI,
and embeds (POST /v1/embeddings) with vectors that depend on the input alone; those
requests take their behaviour from the same script (a Reply answers, after its
``first_delay``; its ``prompt_tokens`` is the usage reported).

    with FakeUpstream() as fake:
        fake.script(Reply("Hi there", delay=0.01), Status.server_error(503))
        ...  # first request streams "Hi there", the second gets a 503
        assert fake.requests[0].json["model"] == "gpt-4o-mini"

Benchmarks run it on its own: ``python -m tests.fake_upstream --port 8090``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import random
import re
import signal
import socket
import ssl
import string
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

DEFAULT_TEXT = "Hello from the fake upstream."
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "smollm2-135m")
# OpenAI keeps one fingerprint per model deployment, so a constant is realistic.
SYSTEM_FINGERPRINT = "fp_0fa4e5c0de"

SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
# OpenAI's default lifetime of a Realtime client secret, when the request names none.
CLIENT_SECRET_SECONDS = 600


# -- Behaviours: what the next POST /v1/chat/completions (or realtime/client_secrets) does --


@dataclass(frozen=True)
class Reply:
    """A successful completion, streamed or not, optionally broken part-way.

    The ``*_after`` faults count content chunks: ``cut_after=2`` sends two pieces of
    text, then drops the connection. ``0`` means right after the role chunk.

    ``usage="exact"`` answers with the most tokens a byte-level BPE tokenizer (every
    token at least one byte) could count: the prompt is counted as OpenAI frames it,
    with each byte a token, and the text is cut to the request's max_tokens bytes,
    each a token, as a provider stops at max_tokens (finish reason "length").
    """

    text: str = DEFAULT_TEXT
    chunks: Sequence[str] | None = None
    first_delay: float = 0.0
    delay: float = 0.0
    usage: bool | Literal["exact"] = True
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    finish_reason: str = "stop"
    done: bool = True
    cut_after: int | None = None
    malformed_after: int | None = None
    hang_after: int | None = None
    error_after: int | None = None
    # The model the answer names; None: the one asked for (OpenAI names a dated snapshot, "gpt-4o-mini-2024-07-18").
    model: str | None = None
    # Function calls the reply makes after its text: ({"name": ..., "arguments": "{...}"}, ...).
    tool_calls: Sequence[dict] = ()

    def pieces(self, body: dict | None = None) -> list[str]:
        if self.chunks is not None:
            pieces = list(self.chunks)
        else:
            # Word-ish pieces that keep their trailing spaces, so "".join() is the text.
            pieces = re.findall(r"\S+\s*|\s+", self.text)
        if self.usage == "exact" and body is not None:
            return _cut_to_bytes(pieces, _max_tokens(body))
        return pieces

    def finish_reason_for(self, pieces: list[str]) -> str:
        """ "length" when usage="exact" cut the text to max_tokens."""
        if self.usage == "exact" and "".join(pieces) != "".join(self.pieces()):
            return "length"
        return "tool_calls" if self.tool_calls else self.finish_reason

    def tool_calls_of(self) -> list[dict]:
        """The function calls as Chat Completions writes them, each with its call id."""
        return [
            {"id": f"call_{n}_{call['name']}", "type": "function", "function": dict(call)}
            for n, call in enumerate(self.tool_calls)
        ]


@dataclass(frozen=True)
class Status:
    """An HTTP error answered with OpenAI's error body, before any streaming starts."""

    status: int = 429
    code: str | None = "rate_limit_exceeded"
    message: str = (
        "Rate limit reached for gpt-4o-mini in organization org-fake on requests per min "
        "(RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )
    type: str = "requests"
    retry_after: float | None = None
    param: str | None = None

    @classmethod
    def invalid_api_key(cls, key: str = "sk-fake") -> Status:
        return cls(
            status=401,
            code="invalid_api_key",
            type="invalid_request_error",
            message=(
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            ),
        )

    @classmethod
    def context_length_exceeded(cls, limit: int = 128000, requested: int = 130000) -> Status:
        return cls(
            status=400,
            code="context_length_exceeded",
            type="invalid_request_error",
            param="messages",
            message=(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"messages resulted in {requested} tokens. Please reduce the length of the "
                "messages."
            ),
        )

    @classmethod
    def server_error(cls, status: int = 500) -> Status:
        message = SERVER_ERROR_MESSAGE
        if status == 503:
            message = "The engine is currently overloaded, please try again later"
        elif status == 502:
            message = "Bad gateway."
        return cls(status=status, code=None, type="server_error", message=message)

    @classmethod
    def model_not_found(cls, model: str = "gpt-nonexistent") -> Status:
        return cls(
            status=404,
            code="model_not_found",
            type="invalid_request_error",
            message=f"The model `{model}` does not exist or you do not have access to it.",
        )

    @classmethod
    def insufficient_quota(cls) -> Status:
        # Same status as a rate limit, but retrying never helps: clients must tell them apart.
        return cls(
            status=429,
            code="insufficient_quota",
            type="insufficient_quota",
            message=(
                "You exceeded your current quota, please check your plan and billing "
                "details. For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors."
            ),
        )


@dataclass(frozen=True)
class Refuse:
    """Accept the connection, read the request, then reset it without a response."""


@dataclass(frozen=True)
class Hang:
    """Send nothing at all (not even headers) for ``seconds``, then drop the connection."""

    seconds: float = 3600.0


Behaviour = Reply | Status | Refuse | Hang


@dataclass
class ReceivedRequest:
    """One POST as the fake saw it, and how far its answer got."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    json: Any  # None when the body was not valid JSON
    chunks_sent: int = 0  # content chunks written so far
    finished: bool = False  # the whole response was written
    disconnected: bool = False  # the client went away before that
    peer: Any = None  # the client's (address, port): the same for requests on one kept-alive connection


# -- Wire format helpers ------------------------------------------------------------------


def _dumps(data: Any) -> str:
    # OpenAI sends compact JSON with raw UTF-8 rather than \u escapes.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _completion_id() -> str:
    return "chatcmpl-" + "".join(random.choices(string.ascii_letters + string.digits, k=29))


def _request_id() -> str:
    return "req_" + "".join(random.choices("0123456789abcdef", k=32))


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
    return 0


# OpenAI's published count of a chat prompt: 3 tokens framing each message, 1 more for a
# name, and 3 priming the reply, besides the tokens of the messages' fields.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def _max_tokens(body: dict) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        if isinstance(body.get(name), int):
            return body[name]
    return None


def _cut_to_bytes(pieces: list[str], limit: int | None) -> list[str]:
    """The pieces up to `limit` bytes of UTF-8 in all (the last one shortened to fit)."""
    if limit is None:
        return pieces
    kept, room = [], limit
    for piece in pieces:
        size = len(piece.encode())
        if size > room:
            piece = piece.encode()[:room].decode(errors="ignore")
            if piece:
                kept.append(piece)
            break
        kept.append(piece)
        room -= size
    return kept


def _byte_count(value: Any) -> int:
    text = value if isinstance(value, str) else _dumps(value)
    return len(text.encode())


def _worst_prompt_tokens(messages: list) -> int:
    """The most tokens a byte-level BPE could count for the prompt: every byte a token, framed as OpenAI does."""
    total = REPLY_PRIMING
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE + sum(_byte_count(value) for value in message.values() if value is not None)
        if "name" in message:
            total += TOKENS_PER_NAME
    return total


def _usage(body: dict, reply: Reply, pieces: list[str]) -> dict:
    messages = body.get("messages") or []
    prompt = reply.prompt_tokens
    if prompt is None and reply.usage == "exact":
        prompt = _worst_prompt_tokens(messages)
    elif prompt is None:
        prompt = sum(_text_length(m.get("content")) for m in messages if isinstance(m, dict)) // 4 + 1
    completion = reply.completion_tokens
    if completion is None and reply.usage == "exact":
        # A reply cut at max_tokens used them all, even where the cut fell inside a character.
        whole = len("".join(reply.pieces()).encode())
        completion = whole if _max_tokens(body) is None else min(whole, _max_tokens(body))
    elif completion is None:
        completion = len(pieces)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _error_response(status: int, body: dict, retry_after: float | None = None) -> web.Response:
    headers = {"x-request-id": _request_id()}
    if retry_after is not None:
        headers["Retry-After"] = f"{retry_after:g}"
    return web.Response(status=status, text=_dumps(body), content_type="application/json", headers=headers)


def _status_response(status: Status) -> web.Response:
    body = _error_body(status.message, status.type, status.param, status.code)
    return _error_response(status.status, body, status.retry_after)


def _auth_error(request: web.Request, api_key: str | None) -> web.Response | None:
    auth = request.headers.get("Authorization", "")
    token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
    if not token:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return _error_response(401, _error_body(message, "invalid_request_error", code="invalid_api_key"))
    if api_key is not None and token != api_key:
        return _status_response(Status.invalid_api_key(token[:8] + "***"))
    return None


NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you "
    "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
    "but what was sent was not valid JSON.)"
)


def _validation_error(request: web.Request, body: Any, api_key: str | None) -> web.Response | None:
    """The checks OpenAI makes that a buggy client would trip, in OpenAI's order."""
    if error := _auth_error(request, api_key):
        return error
    if request.method != "POST":
        return None
    if not isinstance(body, dict):
        return _error_response(400, _error_body(NOT_JSON, "invalid_request_error"))
    if not body.get("model"):
        return _error_response(400, _error_body("you must provide a model parameter", "invalid_request_error"))
    if "messages" not in body:
        message = "Missing required parameter: 'messages'."
        return _error_response(
            400, _error_body(message, "invalid_request_error", "messages", "missing_required_parameter")
        )
    if body.get("stream_options") is not None and body.get("stream") is not True:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return _error_response(400, _error_body(message, "invalid_request_error", "stream_options"))
    return None


def _client_secret_error(body: Any) -> web.Response | None:
    """OpenAI's checks of a POST /v1/realtime/client_secrets body that a buggy client would trip."""
    if not isinstance(body, dict):
        return _error_response(400, _error_body(NOT_JSON, "invalid_request_error"))
    expires_after, session = body.get("expires_after"), body.get("session")
    if expires_after is not None and not isinstance(expires_after, dict):
        message = "Invalid type for 'expires_after': expected an object."
        return _error_response(400, _error_body(message, "invalid_request_error", "expires_after", "invalid_type"))
    if session is not None and (not isinstance(session, dict) or "type" not in session):
        message = "Missing required parameter: 'session.type'."
        return _error_response(
            400, _error_body(message, "invalid_request_error", "session.type", "missing_required_parameter")
        )
    seconds = (expires_after or {}).get("seconds", CLIENT_SECRET_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 10 <= seconds <= 7200:
        below = isinstance(seconds, int) and seconds < 10
        message = (
            f"Invalid 'expires_after.seconds': integer {'below minimum' if below else 'above maximum'} value. "
            f"Expected a value {'>= 10' if below else '<= 7200'}, but got {seconds} instead."
        )
        code = "integer_below_min_value" if below else "integer_above_max_value"
        return _error_response(400, _error_body(message, "invalid_request_error", "expires_after.seconds", code))
    return None


# text-embedding-3-small's length, when the request does not ask for fewer dimensions.
EMBEDDING_DIMENSIONS = 1536


def _is_tokens(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(isinstance(token, int) for token in item)


def _embedding(item: str | list[int], dimensions: int) -> list[float]:
    """A unit vector that depends on the input alone, so equal inputs embed equally."""
    seed = hashlib.sha256(_dumps(item).encode()).digest()
    draw = random.Random(seed)
    values = [draw.uniform(-1, 1) for _ in range(dimensions)]
    norm = sum(value * value for value in values) ** 0.5
    return [value / norm for value in values]


def _embeddings_error(body: Any) -> web.Response | None:
    """OpenAI's checks of a POST /v1/embeddings body that a buggy client would trip."""
    if not isinstance(body, dict):
        return _error_response(400, _error_body(NOT_JSON, "invalid_request_error"))
    if not body.get("model"):
        return _error_response(400, _error_body("you must provide a model parameter", "invalid_request_error"))
    items = body.get("input")
    items = items if isinstance(items, list) and not _is_tokens(items) else [items]
    if not items or not all((isinstance(item, str) and item) or _is_tokens(item) for item in items):
        message = (
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
        )
        return _error_response(400, _error_body(message, "invalid_request_error"))
    return None


def _peer(request: web.Request) -> Any:
    return request.transport.get_extra_info("peername") if request.transport else None


async def _fault(behaviour: Behaviour, request: web.Request, received: ReceivedRequest) -> web.Response | None:
    """The answer of a fault behaviour (Status, Refuse, Hang) to any endpoint; None for a Reply."""
    if isinstance(behaviour, Status):
        received.finished = True
        return _status_response(behaviour)
    if isinstance(behaviour, Refuse):
        _close(request, reset=True)
        return web.Response()
    if isinstance(behaviour, Hang):
        await asyncio.sleep(behaviour.seconds)
        _close(request, reset=False)
        return web.Response()
    return None


def _close(request: web.Request, *, reset: bool) -> None:
    transport = request.transport
    if transport is None:
        return
    if reset:
        # SO_LINGER 0 turns close() into a TCP RST, like a crashed or overloaded proxy.
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        # close() still flushes what was written, so the client gets exactly the chunks sent so far.
        transport.close()


# -- The server ---------------------------------------------------------------------------


class FakeUpstream:
    """An OpenAI-compatible server on 127.0.0.1, run in a background thread.

    Script it from the test thread; every method here is thread-safe. ``api_key``, when
    given, is the only Bearer token accepted; otherwise any non-empty one is.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        api_key: str | None = None,
        record_requests: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.default: Behaviour = Reply()
        # What GET /v1/models lists; a test may narrow it, or set None for a 503 (reset() restores it).
        self.models: tuple[str, ...] | None = MODEL_IDS
        self.port = port
        self._api_key = api_key
        self._ssl_context = ssl_context  # HTTPS with this server context, as the real provider speaks
        self._keepalive_timeout = keepalive_timeout  # seconds an idle connection is kept (aiohttp's default)
        self._record_requests = record_requests  # benchmarks turn it off to keep memory flat
        self._cond = threading.Condition()
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._requests: list[ReceivedRequest] = []
        self._disconnects = 0
        # Bumped by reset(), so a stream left over from an earlier test cannot count here.
        self._epoch = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://127.0.0.1:{self.port}/v1"

    # Lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._stopping = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._stopping = True
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = self._loop = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/realtime/client_secrets", self._client_secrets)
        app.router.add_post("/v1/embeddings", self._embeddings)
        # handler_cancellation: a client that goes away cancels its handler at once, which
        # is how a Stop in the site shows up here (and how a hang ends).
        # A short shutdown_timeout: stop() must not wait for hanging streams to finish.
        self._runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=0.1,
            keepalive_timeout=self._keepalive_timeout,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024, ssl_context=self._ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    # Scripting and inspection (called from the test thread)

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each chat completion request takes the next one."""
        with self._cond:
            self._queue.extend(behaviours)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """Responses whose client went away before the fake finished writing them."""
        with self._cond:
            return self._disconnects

    def reset(self) -> None:
        """Forget the script, the requests and the disconnects, and restore the default reply."""
        with self._cond:
            self._queue.clear()
            self._requests.clear()
            self._disconnects = 0
            self._epoch += 1
            self.default = Reply()
            self.models = MODEL_IDS

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"fake upstream got {len(self._requests)} requests, expected {n}")
            return list(self._requests)

    def wait_for_disconnects(self, n: int, timeout: float = 5.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._disconnects >= n, timeout):
                raise TimeoutError(f"fake upstream saw {self._disconnects} disconnects, expected {n}")

    # Handlers (run on the server thread)

    def _next_behaviour(self) -> Behaviour:
        with self._cond:
            return self._queue.popleft() if self._queue else self.default

    def _note_disconnect(self, received: ReceivedRequest, epoch: int) -> None:
        if received.finished or self._stopping:
            return
        received.disconnected = True
        with self._cond:
            if epoch == self._epoch:
                self._disconnects += 1
                self._cond.notify_all()

    async def _models(self, request: web.Request) -> web.Response:
        if error := _validation_error(request, None, self._api_key):
            return error
        if self.models is None:
            return _status_response(Status.server_error(503))
        models = [{"id": m, "object": "model", "created": 1721172741, "owned_by": "system"} for m in self.models]
        return web.json_response({"object": "list", "data": models}, dumps=_dumps)

    async def _receive(self, request: web.Request) -> tuple[Any, ReceivedRequest]:
        """The request's JSON body (None if it is not JSON), recorded for the test to inspect."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        received = ReceivedRequest(
            request.method, request.path, CIMultiDictProxy(CIMultiDict(request.headers)), body, peer=_peer(request)
        )
        if self._record_requests:
            with self._cond:
                self._requests.append(received)
                self._cond.notify_all()
        return body, received

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        body, received = await self._receive(request)
        epoch = self._epoch

        if error := _validation_error(request, body, self._api_key):
            received.finished = True
            return error

        behaviour = self._next_behaviour()
        try:
            if (fault := await _fault(behaviour, request, received)) is not None:
                return fault
            if body.get("stream") is True:
                return await self._stream(request, body, behaviour, received)
            return await self._complete(request, body, behaviour, received)
        except asyncio.CancelledError:
            self._note_disconnect(received, epoch)
            raise
        except ConnectionResetError:
            # A write raced the client's close, before the cancellation arrived.
            self._note_disconnect(received, epoch)
            return web.Response()

    async def _client_secrets(self, request: web.Request) -> web.StreamResponse:
        """Mint a Realtime client secret: a Reply answers (after its first_delay), faults as for chat."""
        body, received = await self._receive(request)
        epoch = self._epoch

        if error := _auth_error(request, self._api_key) or _client_secret_error(body):
            received.finished = True
            return error

        behaviour = self._next_behaviour()
        try:
            if (fault := await _fault(behaviour, request, received)) is not None:
                return fault
            if behaviour.first_delay:
                await asyncio.sleep(behaviour.first_delay)
            seconds = (body.get("expires_after") or {}).get("seconds", CLIENT_SECRET_SECONDS)
            session = body.get("session") or {"type": "realtime", "model": "gpt-realtime"}
            answer = {
                "value": "ek_" + "".join(random.choices("0123456789abcdef", k=32)),
                "expires_at": int(time.time()) + seconds,
                "session": {"id": "sess_" + "".join(random.choices(string.ascii_letters, k=20)), **session},
            }
            received.finished = True
            return web.json_response(answer, dumps=_dumps, headers={"x-request-id": _request_id()})
        except asyncio.CancelledError:
            self._note_disconnect(received, epoch)
            raise

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """Embed each input: a unit vector drawn from its hash, floats or base64 float32 as asked."""
        body, received = await self._receive(request)
        if error := _auth_error(request, self._api_key) or _embeddings_error(body):
            received.finished = True
            return error
        behaviour = self._next_behaviour()
        if (fault := await _fault(behaviour, request, received)) is not None:
            return fault
        if behaviour.first_delay:
            await asyncio.sleep(behaviour.first_delay)
        inputs = body["input"] if isinstance(body["input"], list) and not _is_tokens(body["input"]) else [body["input"]]
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        data = []
        for index, item in enumerate(inputs):
            vector = _embedding(item, dimensions)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = behaviour.prompt_tokens
        if tokens is None:
            tokens = sum(len(item) if _is_tokens(item) else len(item.encode()) // 4 + 1 for item in inputs)
        received.finished = True
        answer = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.json_response(answer, dumps=_dumps, headers={"x-request-id": _request_id()})

    async def _complete(
        self, request: web.Request, body: dict, reply: Reply, received: ReceivedRequest
    ) -> web.StreamResponse:
        pieces = reply.pieces(body)
        finish_reason = reply.finish_reason_for(pieces)
        # Non-streaming answers come all at once, after the whole generation time.
        generation_time = reply.first_delay + reply.delay * max(len(pieces) - 1, 0)
        if generation_time > 0:
            await asyncio.sleep(generation_time)
        if reply.hang_after is not None:
            await asyncio.get_running_loop().create_future()  # until the client gives up
        if reply.error_after is not None:
            received.finished = True
            return _status_response(Status.server_error())

        completion = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": reply.model or body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        # null beside tool calls only, as OpenAI writes it
                        "content": None if reply.tool_calls and not pieces else "".join(pieces),
                        "refusal": None,
                        "annotations": [],
                        **({"tool_calls": reply.tool_calls_of()} if reply.tool_calls else {}),
                    },
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if reply.usage:
            completion["usage"] = _usage(body, reply, pieces)
        data = b"{not json" if reply.malformed_after is not None else _dumps(completion).encode()
        headers = {"Content-Type": "application/json", "x-request-id": _request_id()}

        if reply.cut_after is not None:
            # Promise the whole body, send half of it, then hang up.
            resp = web.StreamResponse(headers=headers)
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            _close(request, reset=False)
            return resp

        received.chunks_sent = len(pieces)
        received.finished = True
        return web.Response(body=data, headers=headers)

    async def _stream(
        self, request: web.Request, body: dict, reply: Reply, received: ReceivedRequest
    ) -> web.StreamResponse:
        pieces = reply.pieces(body)
        finish_reason = reply.finish_reason_for(pieces)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        envelope = {
            "id": _completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reply.model or body["model"],
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

        def event(delta: dict | None, finish_reason: str | None = None, usage: dict | None = None) -> bytes:
            choices = (
                []
                if delta is None
                else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
            )
            chunk = {**envelope, "choices": choices}
            if include_usage:
                chunk["usage"] = usage
            return b"data: " + _dumps(chunk).encode() + b"\n\n"

        # Content chunks are the hot path in benchmarks: build the bytes around the content
        # once per stream from a real chunk, so they cannot drift from the slow path's format.
        marker = "\x00content\x00"
        before, after = event({"content": marker}).split(_dumps(marker).encode())

        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "x-request-id": _request_id(),
            }
        )
        await resp.prepare(request)
        # aiohttp holds the headers back until the first body write; this sends both now.
        await resp.write(event({"role": "assistant", "content": "", "refusal": None}))

        loop = asyncio.get_running_loop()
        # Pace against absolute deadlines so slow wake-ups under load do not add up.
        started = loop.time() + reply.first_delay
        for i in range(len(pieces) + 1):
            if i < len(pieces):
                wait = started + i * reply.delay - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            if i == reply.cut_after:
                _close(request, reset=False)
                return resp
            if i == reply.hang_after:
                await loop.create_future()  # until the client goes away
            if i == reply.error_after:
                await resp.write(
                    b"data: " + _dumps(_error_body(SERVER_ERROR_MESSAGE, "server_error")).encode() + b"\n\n"
                )
                await resp.write_eof()
                received.finished = True
                return resp
            if i == reply.malformed_after:
                await resp.write(b"data: {not json\n\n")
            if i < len(pieces):
                await resp.write(before + _dumps(pieces[i]).encode() + after)
                received.chunks_sent += 1

        for index, call in enumerate(reply.tool_calls_of()):
            # As OpenAI streams a call: its id and name first, then the arguments in pieces.
            arguments = call["function"]["arguments"]
            opening = {**call, "index": index, "function": {"name": call["function"]["name"], "arguments": ""}}
            await resp.write(event({"tool_calls": [opening]}))
            for piece in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                await resp.write(event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        await resp.write(event({}, finish_reason))
        if include_usage and reply.usage:
            await resp.write(event(None, usage=_usage(body, reply, pieces)))
        if reply.done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        received.finished = True
        return resp


# -- Command line, for benchmarks ---------------------------------------------------------

_WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "tokens", "arrive")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve paced fake OpenAI streams on loopback.")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per reply")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between chunks")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first chunk")
    args = parser.parse_args(argv)

    fake = FakeUpstream(args.port, record_requests=False)
    pieces = [_WORDS[i % len(_WORDS)] + " " for i in range(args.chunks)]
    fake.default = Reply(chunks=pieces, delay=args.interval, first_delay=args.first_delay)
    stopped = threading.Event()
    # Handle both signals explicitly: a shell starting us in the background with `&`
    # ignores SIGINT by default, and bench scripts usually send SIGTERM.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    fake.start()
    print(f"fake upstream on {fake.base_url} ({args.chunks} chunks, {args.interval}s apart); Ctrl-C stops", flush=True)
    stopped.wait()
    fake.stop()


if __name__ == "__main__":
    main()
