"""The site's server: daphne on uvloop's event loop. `python -m chatsite.serve` takes daphne's own arguments.

daphne runs Twisted on an asyncio event loop it makes as it is imported, so
the loop's policy is set before that. On uvloop's loop (libuv's, in C) the
same code relays a streamed chunk for about a sixth less CPU on /v1 and a
tenth less on the web chat (bench/README.md, 30 Nov 2026).

Twisted's TCP connections also write through to the socket, a response's headers
go with its first data, daphne reads Twisted's HTTP module without its deprecation
proxy, and each request's messages to the app wait in a queue a tenth the size of
asyncio's (below).
"""

import asyncio
from functools import partial

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

import daphne.http_protocol  # noqa: E402  installs no reactor: daphne.cli does, making its event loop
from daphne.cli import CommandLineInterface  # noqa: E402  daphne makes its event loop on import
from daphne.server import Server  # noqa: E402
from twisted.internet import tcp  # noqa: E402
from twisted.web import http  # noqa: E402

from chatsite.request_messages import RequestMessages  # noqa: E402

# Twisted's own: buffered, or through TLS when it is on.
_buffered_write, _buffered_write_sequence = tcp.Connection.write, tcp.Connection.writeSequence
_twisted_request_write = http.Request.write


def _write_through(self: tcp.Connection, data: bytes) -> None:
    """Send at once what the socket takes when nothing waits to be sent before it; buffer the rest as Twisted does.

    Twisted buffers every write and sends it once the loop reports the socket
    writable: one more turn of the loop, and the socket put in and out of the
    loop's watch list, for every streamed chunk, though a socket nobody is
    behind on takes it at once. Written through, daphne's own write of a chunk
    costs about a third less CPU (bench/floor_bench.py, 200 paced streams:
    48.6, 43.9 -> 32.1, 35.5 µs). A write that the socket takes in part, or
    that finds data still waiting, goes to Twisted's buffer behind it, so
    order, back-pressure on producers and the end of the connection are
    Twisted's own; so does any failure to send, which Twisted then reports,
    and any write on TLS.
    """
    if self._corked is not None:
        self._corked.append(data)
        return
    if (
        data
        and not self.TLS
        and self.connected
        and not self._writeDisconnected
        and not self.disconnecting
        and not self.dataBuffer
        and not self._tempDataLen
    ):
        sent = self.writeSomeData(data)
        if isinstance(sent, int) and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    _buffered_write(self, data)


def _write_sequence_through(self: tcp.Connection, iovec) -> None:
    # daphne writes each chunk of a response as three pieces (its size, the data, CRLF): one send, not three.
    if self.TLS and self._corked is None:
        _buffered_write_sequence(self, iovec)
    else:
        self.write(b"".join(iovec))


def _headers_with_first_data(self: http.Request, data: bytes) -> None:
    """Twisted's Request.write, the response's headers sent with its first data: one send, not two.

    Twisted writes the status line and headers, then the data, each to the
    socket. The first send wakes the client, which on a busy machine then runs
    before the second: 0.7 ms between a message POST's headers and its body
    (the web chat's TTFT bench, a scratch probe). Later writes of a stream are
    one piece each already.
    """
    transport = getattr(self.channel, "transport", None)
    if self.startedWriting or not isinstance(transport, tcp.Connection) or transport._corked is not None:
        return _twisted_request_write(self, data)
    transport._corked = pieces = []
    try:
        return _twisted_request_write(self, data)
    finally:
        transport._corked = None
        if pieces:
            transport.write(b"".join(pieces))


def writes_through() -> None:
    """Twisted's TCP connections send what the socket takes at once (_write_through), a response's headers with
    its first data (_headers_with_first_data); TLS keeps its own path."""
    tcp.Connection._corked = None  # a list while _headers_with_first_data gathers what the request writes
    tcp.Connection.write = _write_through
    tcp.Connection.writeSequence = _write_sequence_through
    http.Request.write = _headers_with_first_data


writes_through()

# twisted.web.http is a module proxy (twisted.python.deprecate, for its deprecated names) whose every attribute
# read builds a helper object in Python: about 4 µs each, here. daphne reads `http.Request` from it to write
# every chunk of every streamed response (WebRequest.handle_reply), so it reads the module itself instead.
daphne.http_protocol.http = object.__getattribute__(http, "_module")


class LeanServer(Server):
    """daphne's server, each request's messages to the app in a RequestMessages (chatsite/request_messages.py)."""

    def create_application(self, protocol, scope):
        """daphne's own (4.2.3's, to follow it when daphne changes), with RequestMessages for its asyncio.Queue."""
        assert "application_instance" not in self.connections[protocol]
        messages = RequestMessages()
        scope.setdefault("asgi", {"version": "3.0"})
        application_instance = self.application(
            scope=scope, receive=messages.get, send=partial(self.handle_reply, protocol)
        )
        if protocol not in self.connections:
            return None
        self.connections[protocol]["application_instance"] = asyncio.ensure_future(
            application_instance, loop=asyncio.get_event_loop()
        )
        return messages


CommandLineInterface.server_class = LeanServer

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
