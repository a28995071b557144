"""The upstream client (conversations/llm.py) as the /v1 relay and the reply runner use it, against the fake upstream.

What an API client of ours would notice: the provider's bytes relayed unchanged,
usage and finish reasons kept for billing, failures reported, and retries that
neither wait longer than we allow nor multiply the provider's calls.
"""

import asyncio
import contextlib
import gc
import json
import logging
import types
import zlib

import pytest

from conversations.llm import ReplyStream, UpstreamError, Usage, completion_create, stream_open
from tests.fake_upstream import SERVER_ERROR_MESSAGE, Hang, Reply, Status

MESSAGES = [{"role": "user", "content": "Hello?"}]


async def relayed(body: dict | None = None) -> tuple[list[bytes], ReplyStream]:
    """The events raw_events() yields for one streamed call, and the stream."""
    stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES, **(body or {})})
    try:
        return [event async for event in stream.raw_events()], stream
    finally:
        await stream.close()


def as_the_fake_wrote_it(event: bytes) -> bytes:
    """The event re-encoded exactly as the fake (and OpenAI) encodes one: compact JSON, raw UTF-8."""
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    chunk = json.loads(event[6:])
    return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def text_of(events: list[bytes]) -> str:
    chunks = [json.loads(event[6:]) for event in events]
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])


async def test_raw_events_pass_the_providers_bytes_through_unchanged(upstream):
    # A piece far larger than one network read, in a script of several bytes a character:
    # its event arrives split across many reads and must come out whole.
    pieces = ["Grüße ", "日本語 " * 40_000, "🙂 done"]
    upstream.script(Reply(chunks=pieces))

    events, _ = await relayed()

    assert len(events) == 1 + len(pieces) + 2  # role, content, finish, usage; [DONE] is the caller's to send
    assert all(event == as_the_fake_wrote_it(event) for event in events)
    assert text_of(events) == "".join(pieces)


async def test_raw_events_keep_the_usage_and_finish_reason(upstream):
    upstream.script(
        Reply(text="Cut short here", prompt_tokens=12, completion_tokens=34, cached_tokens=5, finish_reason="length")
    )

    events, stream = await relayed()

    assert stream.usage == Usage(prompt_tokens=12, completion_tokens=34, cached_tokens=5)
    assert stream.finish_reason == "length"
    assert b'"usage":{"prompt_tokens":12' in events[-1]  # passed on too, for apps that asked for usage


async def test_raw_events_raise_an_error_event_from_the_provider(upstream):
    upstream.script(Reply(chunks=["Some ", "text ", "more"], error_after=2))
    stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
    events = []

    with pytest.raises(UpstreamError) as raised:
        async for event in stream.raw_events():
            events.append(event)

    assert text_of(events) == "Some text "
    assert "reported an error mid-reply" in raised.value.user_message
    assert raised.value.provider_error == {
        "message": SERVER_ERROR_MESSAGE,
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert raised.value.status is None


async def test_raw_events_flag_a_stream_that_ended_without_done(upstream):
    upstream.script(Reply(text="Looks finished.", done=False))
    stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
    events = []

    with pytest.raises(UpstreamError) as raised:
        async for event in stream.raw_events():
            events.append(event)

    assert raised.value.code == "stream_incomplete"
    assert text_of(events) == "Looks finished."
    assert stream.usage is not None  # the usage chunk came before the end


@pytest.mark.parametrize(
    ("fault", "code"),
    [({"cut_after": 1}, "stream_cut"), ({"malformed_after": 1}, "malformed_chunk"), ({"hang_after": 1}, "timeout")],
)
async def test_raw_events_report_a_broken_stream(upstream, settings, fault, code):
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    upstream.script(Reply(chunks=["One ", "two"], **fault))
    stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
    events = []

    with pytest.raises(UpstreamError) as raised:
        async for event in stream.raw_events():
            events.append(event)
    await stream.close()

    assert raised.value.code == code
    assert text_of(events) == "One "


async def test_a_stream_read_to_its_end_leaves_its_connection_for_the_next_call(upstream):
    await relayed()
    await relayed()

    first, second = upstream.requests
    assert first.peer == second.peer


async def test_an_open_stream_keeps_no_copy_of_the_prompt_it_sent(upstream):
    upstream.script(Reply(chunks=["a", "b"], first_delay=0.05))
    chat = [{"role": "user", "content": f"turn {n}: " + "words " * 2000} for n in range(10)]  # 120 KB

    stream = await stream_open({"model": "gpt-4o-mini", "messages": chat})
    try:
        largest = largest_bytes_reachable(stream)
        events = [event async for event in stream.raw_events()]
    finally:
        await stream.close()

    assert len(upstream.requests[-1].json["messages"]) == 10  # all of it was sent
    assert largest < 10_000  # while the reply comes, nothing of the serialized prompt is held
    assert text_of(events) == "ab"


# Not followed: what leads to the whole process (the fake upstream, in this process, holds the prompt it got).
NOT_FOLLOWED = (types.ModuleType, types.FunctionType, type, asyncio.AbstractEventLoop, asyncio.Future)


def largest_bytes_reachable(root) -> int:
    """The size of the largest bytes object that `root` holds, through its references to other objects."""
    seen, todo, largest = set(), [root], 0
    while todo:
        item = todo.pop()
        if id(item) in seen or isinstance(item, NOT_FOLLOWED):
            continue
        seen.add(id(item))
        if isinstance(item, (bytes, bytearray, memoryview)):
            largest = max(largest, len(item))
        todo.extend(gc.get_referents(item))
    return largest


async def test_a_call_that_goes_well_writes_nothing_to_the_sites_log(upstream, caplog):
    caplog.set_level(logging.INFO)  # the site's LOG_LEVEL by default

    await relayed()
    await completion_create({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert len(upstream.requests) == 2
    assert caplog.records == []  # no line a call, from the SDK's HTTP client or anything else


async def test_closing_a_stream_hangs_up_on_the_provider(upstream):
    upstream.script(Reply(chunks=["word "] * 1000, delay=0.01))
    stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
    async for _ in stream.raw_events():
        break

    await stream.close()

    upstream.wait_for_disconnects(1)
    assert upstream.requests[0].chunks_sent < 1000


async def test_the_callers_body_reaches_the_provider_unchanged(upstream):
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi", "name": "ann", "vendor_hint": {"keep": [1, 2]}}],
        "max_tokens": 5,
        "temperature": 0.2,
        "logit_bias": {"50256": -100},
        "a_field_no_sdk_knows": {"nested": None},
        "stream_options": {"include_obfuscation": False},
    }

    await relayed(body)

    sent = upstream.requests[0]
    assert sent.json == body | {"stream": True, "stream_options": {"include_obfuscation": False, "include_usage": True}}
    assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"


@pytest.mark.parametrize("streamed", [True, False])
async def test_the_provider_hears_who_calls_but_nothing_of_the_server_it_runs_on(upstream, settings, streamed):
    settings.UPSTREAM_RETRIES = 2
    upstream.script(Status(503, retry_after=0), Reply(text="Hi"))
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}

    if streamed:
        await relayed()
    else:
        await completion_create(body)

    for sent in upstream.requests:  # the retry's too
        assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"
        assert sent.headers["User-Agent"].startswith("AsyncOpenAI/Python ")
        assert sent.headers["Content-Type"] == "application/json"
        assert not [name for name in sent.headers if name.lower().startswith("x-stainless")]
    assert len(upstream.requests) == 2


async def test_a_retry_after_within_the_cap_is_waited_for(upstream, settings):
    settings.UPSTREAM_RETRY_MAX_WAIT = 1
    upstream.script(Status(429, retry_after=0.2), Reply(text="After the wait."))

    completion = await completion_create({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert completion["choices"][0]["message"]["content"] == "After the wait."
    assert len(upstream.requests) == 2


@pytest.mark.parametrize("refusal", [Status(429, retry_after=2), Status(503, code=None, retry_after=2)])
async def test_a_retry_after_beyond_the_cap_ends_the_call_at_once(upstream, settings, refusal):
    settings.UPSTREAM_RETRY_MAX_WAIT = 1
    upstream.script(refusal, Reply())

    with pytest.raises(UpstreamError) as raised:
        await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert len(upstream.requests) == 1
    assert raised.value.retry_after == 2  # the /v1 gateway passes it on as Retry-After
    assert raised.value.status == refusal.status
    assert raised.value.code == ("rate_limited" if refusal.status == 429 else "upstream_unavailable")


async def test_retries_add_no_calls_of_their_own(upstream, settings):
    settings.UPSTREAM_RETRIES = 2
    upstream.script(*[Status.server_error(500)] * 3, Reply())

    with pytest.raises(UpstreamError):
        await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert len(upstream.requests) == 3
    assert not any("Idempotency-Key" in request.headers for request in upstream.requests)


async def test_a_refused_key_is_not_retried(upstream):
    upstream.script(Status(403, code="unsupported_country_region_territory", message="Country not supported."))

    with pytest.raises(UpstreamError) as raised:
        await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert raised.value.code == "upstream_auth"
    assert len(upstream.requests) == 1


async def test_a_request_that_timed_out_is_not_sent_again(upstream, settings):
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    upstream.script(Hang(5))

    with pytest.raises(UpstreamError) as raised:
        await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert raised.value.code == "timeout"
    assert len(upstream.requests) == 1  # the provider may be generating it already


async def test_the_providers_error_comes_without_our_key_or_address(upstream, settings):
    upstream.script(
        Status.invalid_api_key(key=settings.OPENAI_API_KEY),
        Status(400, code="bad_route", message=f"No route to {upstream.base_url}/chat/completions for this key"),
    )

    with pytest.raises(UpstreamError) as refused:
        await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
    with pytest.raises(UpstreamError) as rejected:
        await completion_create({"model": "gpt-4o-mini", "messages": MESSAGES})

    assert refused.value.status == 401
    assert refused.value.provider_error["code"] == "invalid_api_key"
    assert refused.value.provider_error["message"].startswith("Incorrect API key provided: [redacted].")
    assert rejected.value.status == 400
    assert rejected.value.provider_error["message"] == "No route to [redacted]/chat/completions for this key"
    for error in (refused.value, rejected.value):
        seen = json.dumps(error.provider_error) + error.user_message
        assert settings.OPENAI_API_KEY[:8] not in seen
        assert f"127.0.0.1:{upstream.port}" not in seen


@contextlib.asynccontextmanager
async def provider_sending(events: list[bytes], *, gzip: bool = False):
    """A provider that streams `events` as they are, each in an HTTP chunk of its own (with `gzip`: compressed,
    each flushed); yields its URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        encoding = b"Content-Encoding: gzip\r\n" if gzip else b""
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n%sTransfer-Encoding: chunked\r\n\r\n" % encoding
        )
        pieces = events
        if gzip:
            compressor = zlib.compressobj(wbits=31)
            pieces = [compressor.compress(event) + compressor.flush(zlib.Z_SYNC_FLUSH) for event in events]
            pieces.append(compressor.flush())
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    finally:
        server.close()


def sse(*chunks: dict) -> list[bytes]:
    return [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]


async def text_from(settings, events: list[bytes], *, gzip: bool = False) -> tuple[str, ReplyStream]:
    """The text ReplyStream.deltas() reads from a provider sending `events`."""
    settings.OPENAI_API_KEY = "sk-upstream-secret"
    async with provider_sending(events, gzip=gzip) as settings.OPENAI_BASE_URL:
        stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
        try:
            return "".join([delta async for delta in stream.deltas()]), stream
        finally:
            await stream.close()


async def test_a_stream_the_provider_compresses_is_read_decompressed(settings):
    chunks = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in ("Packed ", "and ", "unpacked")]
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, {"choices": [], "usage": usage}]

    text, stream = await text_from(settings, sse(*chunks), gzip=True)

    assert text == "Packed and unpacked"
    assert stream.usage == Usage(prompt_tokens=3, completion_tokens=4)
    assert stream.finish_reason == "stop"


@pytest.mark.parametrize("choice", [{"index": 0}, {"index": 0, "delta": "text"}, "text"])
async def test_a_chunk_whose_choice_has_no_delta_is_reported_as_unreadable(settings, choice):
    events = sse({"choices": [{"index": 0, "delta": {"content": "Fine so far"}}]}, {"choices": [choice]})

    with pytest.raises(UpstreamError) as failed:
        await text_from(settings, events)

    assert failed.value.code == "malformed_chunk"
