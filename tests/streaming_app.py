"""A bare ASGI app served by chatsite.serve in tests/test_serve.py: what reaches a client of the server's writes.

GET /big: one piece far larger than a socket takes at once, then PIECES small numbered ones behind it.
GET /endless: a small piece every 10 ms until the client goes; GET /ended then says how many such streams saw
their client go.
POST /echo: the body's length and SHA-256, as the app received it, and the class of the queue it came through.
GET /small: a short answer of known length; GET /sends?port=N then says in how many sends the server wrote to the
client on port N (Twisted's writeSomeData, counted from here, in the server's process).
"""

import asyncio
import hashlib
from urllib.parse import parse_qs

from twisted.internet import tcp

BIG = bytes(range(256)) * (64 * 1024)  # 16 MB
PIECES = 2000
_ended = 0


_sends: dict[int, int] = {}  # by the client's port


def _sends_counted() -> None:
    """From the first request on, count the server's sends to each client (Twisted's writeSomeData): here, in the
    server's process, not in the tests' that import this module."""
    write_some_data = tcp.Connection.writeSomeData
    if getattr(write_some_data, "counted", False):
        return

    def write_counted(self, data):
        port = self.getPeer().port
        _sends[port] = _sends.get(port, 0) + 1
        return write_some_data(self, data)

    write_counted.counted = True
    tcp.Connection.writeSomeData = write_counted


def piece(n: int) -> bytes:
    return f"piece {n}\n".encode()


async def application(scope, receive, send):
    global _ended
    if scope["type"] != "http":
        return
    _sends_counted()
    request = await receive()
    if scope["path"] == "/echo":
        body = request["body"]
        while request.get("more_body"):
            request = await receive()
            body += request["body"]
        queue = type(receive.__self__).__name__
        answer = f"{len(body)} {hashlib.sha256(body).hexdigest()} {queue}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})
        return
    if scope["path"] in ("/small", "/sends"):
        if scope["path"] == "/small":
            answer = b"hello"
        else:
            answer = str(_sends.get(int(parse_qs(scope["query_string"].decode())["port"][0]), 0)).encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    if scope["path"] == "/big":
        await send({"type": "http.response.body", "body": BIG, "more_body": True})
        for n in range(PIECES):
            await send({"type": "http.response.body", "body": piece(n), "more_body": True})
    elif scope["path"] == "/endless":
        gone = asyncio.ensure_future(receive())  # http.disconnect, once the client goes
        n = 0
        while not gone.done():
            await send({"type": "http.response.body", "body": piece(n), "more_body": True})
            n += 1
            await asyncio.sleep(0.01)
        _ended += 1
    elif scope["path"] == "/ended":
        await send({"type": "http.response.body", "body": str(_ended).encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
