"""The least a streaming proxy can be on our server: an ASGI app with no Django, no database and no checks.

floor_bench.py serves it the way the site is served (chatsite.serve: daphne on
uvloop) and measures it as stream_bench.py measures the site's /v1. Each
request's body goes to the fake upstream (BARE_RELAY_UPSTREAM) through one
kept-alive httpx client, and the upstream's bytes come back as they arrive.

With BARE_RELAY_EMIT ("chunks,interval,first delay") it reads nothing: it
writes that many chunk lines itself, paced by the loop's timers, so that what
the server costs to write a chunk is measured apart from reading one.
"""

import asyncio
import json
import os

import httpx

UPSTREAM = os.environ.get("BARE_RELAY_UPSTREAM", "")
EMIT = os.environ.get("BARE_RELAY_EMIT", "")
_client: httpx.AsyncClient | None = None
SSE_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _chunk_line(content: str) -> bytes:
    """A content chunk as the fake writes one (about the same size)."""
    choice = {"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}
    chunk = {"id": "chatcmpl-bare", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-mini"}
    return f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode()


async def _emit(send) -> None:
    chunks, interval, first_delay = EMIT.split(",")
    await send(SSE_START)
    await asyncio.sleep(float(first_delay))
    for n in range(int(chunks)):
        if n:
            await asyncio.sleep(float(interval))
        await send({"type": "http.response.body", "body": _chunk_line(f"word{n} "), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _relay(body: bytes, send) -> None:
    global _client
    if _client is None:
        # No cap on connections, as the site's own upstream client (httpx's default, 100, queues the rest).
        _client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=None))
    headers = {"content-type": "application/json", "authorization": "Bearer bare-relay"}
    async with _client.stream("POST", f"{UPSTREAM}/chat/completions", content=body, headers=headers) as upstream:
        await send({**SSE_START, "status": upstream.status_code})
        async for piece in upstream.aiter_raw():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    elif EMIT:
        await _emit(send)
    else:
        await _relay(body, send)
