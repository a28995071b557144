"""The least a streaming proxy can be on our server: an ASGI app with no Django, no database and no checks.

floor_bench.py serves it the way the site is served (chatsite.serve: daphne on
uvloop) and measures it as stream_bench.py measures the site's /v1. Each
request's body goes to the fake upstream (BARE_RELAY_UPSTREAM) through one
kept-alive httpx client, and the upstream's bytes come back as they arrive.
"""

import os

import httpx

UPSTREAM = os.environ.get("BARE_RELAY_UPSTREAM", "")
_client: httpx.AsyncClient | None = None


async def _body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def application(scope, receive, send):
    global _client
    if scope["type"] != "http":
        return
    body = await _body(receive)
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if _client is None:
        _client = httpx.AsyncClient(timeout=30)
    headers = {"content-type": "application/json", "authorization": "Bearer bare-relay"}
    async with _client.stream("POST", f"{UPSTREAM}/chat/completions", content=body, headers=headers) as upstream:
        start = {"type": "http.response.start", "status": upstream.status_code}
        await send({**start, "headers": [(b"content-type", b"text/event-stream")]})
        async for piece in upstream.aiter_raw():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
