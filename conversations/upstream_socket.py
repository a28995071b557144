"""The upstream's connections on asyncio's own transports, under the SDK's httpx client.

httpx reaches the network through httpcore's network backend, which on asyncio
is anyio's: every read opens a cancel scope for its timeout and goes through
anyio's stream and task machinery. A relayed reply is one read per token, for
every reply in flight, so that machinery was about a sixth of the CPU of a
relayed chunk. This backend is the same contract (httpcore's
AsyncNetworkBackend) written on an asyncio Protocol: a read returns what the
connection has buffered at once, and waits on one future, with one timer for
its timeout, only when nothing is there. Everything above the socket (the
SDK, httpx, httpcore's HTTP/1.1 and its pool) is unchanged.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2
import openai

from chatsite.sockets import readable
from conversations.upstream_chunked import read_chunks_whole_on

# A connection stops reading from its socket once this much is buffered unread (TCP then slows the sender).
HIGH_WATER = 256 * 1024
# A write smaller than this goes at the end of the loop's turn, in one send with what is written after it (a
# request's head and body); a larger one is sent at once, and waits while the socket's buffers are full.
SENT_WITH_WHAT_FOLLOWS = 64 * 1024
# A connection is held (AsyncioStream.hold) only while what it receives comes at least this far apart: a
# reply that comes all at once, a packet or two a moment after another, is read to its end straight away.
TRICKLE_GAP = 0.002


class _Connection(asyncio.Protocol):
    """What the socket delivered and not yet read, and the one read waiting for more."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed: Exception | None = None  # why no more will come: EOF is a plain ConnectionError
        self.waiter: asyncio.Future | None = None
        # The waiting read's deadline, and the one timer that checks it. Reads come a token apart and
        # their timeout is a minute: one timer, moved on when it fires early, instead of one per read.
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False  # too much buffered unread
        # Set while asked not to read (AsyncioStream.hold), ending the hold when it fires: what comes
        # meanwhile waits in the kernel, to be read in one piece.
        self.hold_timer: asyncio.TimerHandle | None = None
        self.arrived_at = 0.0  # the loop's time when the socket last delivered, and how long after the time before
        self.gap = 0.0
        self.drained: asyncio.Future | None = None
        self.writing_paused = False
        self.unsent: list[bytes] = []  # written this turn of the loop, sent together at its end (send_soon)
        self.lost = asyncio.get_running_loop().create_future()  # done once the socket is closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self.gap = now - self.arrived_at if self.arrived_at else 0.0
        self.arrived_at = now
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused:
            self.paused = True
            self.reading_update()
        self._wake()

    def reading_update(self) -> None:
        """Read from the socket unless too much is buffered or a hold is on."""
        if self.transport is None or self.closed is not None:
            return
        if self.paused or self.hold_timer is not None:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def hold(self, until: float) -> None:
        if (
            self.hold_timer is None
            and self.closed is None
            and self.gap >= TRICKLE_GAP
            and not self.buffer
            and not self.socket_readable()
        ):
            self.hold_timer = asyncio.get_running_loop().call_at(until, self.hold_end)
            self.reading_update()

    def socket_readable(self) -> bool:
        """Whether the kernel has something for us already: a reply that came whole is read, not held."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        return sock is not None and readable(sock.fileno())

    def hold_end(self) -> None:
        if self.hold_timer is not None:
            self.hold_timer.cancel()
            self.hold_timer = None
            self.reading_update()

    def eof_received(self) -> bool:
        self.closed = self.closed or ConnectionError("the server closed the connection")
        self._wake()
        return False  # close our side too: HTTP/1.1 has nothing to send after the server's EOF

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or exc or ConnectionError("the connection was closed")
        self._wake()
        self.lost.set_result(None)
        for timer in (self.timer, self.hold_timer):
            if timer is not None:
                timer.cancel()
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(self.closed)

    def send_soon(self, data: bytes) -> None:
        """Send `data` at the end of this turn of the loop, with whatever else is written meanwhile.

        httpcore writes a request's head and its body apart, one after the
        other: they leave in one send, and reach the provider in one piece.
        """
        if not self.unsent:
            asyncio.get_running_loop().call_soon(self.send)
        self.unsent.append(data)

    def send(self) -> None:
        """Send what is written and not sent yet, now."""
        data, self.unsent = b"".join(self.unsent), []
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    async def readable(self, timeout: float | None) -> None:
        """Until something comes or the connection ends; TimeoutError after `timeout` seconds (None: no limit)."""
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        if timeout is not None:
            self.deadline = loop.time() + timeout
            if self.timer is not None and self.timer.when() > self.deadline:
                self.timer.cancel()
                self.timer = None
            if self.timer is None:
                self.timer = loop.call_at(self.deadline, self._check_deadline)
        try:
            await self.waiter
        finally:
            self.waiter = None

    def _check_deadline(self) -> None:
        self.timer = None
        if self.waiter is None or self.waiter.done():
            return  # no read is waiting: the next one sets a timer again
        loop = asyncio.get_running_loop()
        if loop.time() >= self.deadline:
            self.waiter.set_exception(TimeoutError())
        else:
            self.timer = loop.call_at(self.deadline, self._check_deadline)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class AsyncioStream(httpcore2.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        if not connection.buffer:
            if connection.closed is not None:
                return b""  # httpcore reads an empty read as the server having closed
            try:
                await connection.readable(timeout)
            except TimeoutError:
                raise httpcore2.ReadTimeout("the upstream sent nothing in time") from None
            if not connection.buffer:
                return b""
        data = bytes(connection.buffer[:max_bytes])
        del connection.buffer[:max_bytes]
        if connection.paused and len(connection.buffer) <= HIGH_WATER // 4:
            connection.paused = False
            connection.reading_update()
        return data

    def hold(self, until: float) -> None:
        """Read nothing more from the socket until the loop's time `until`, then all that came meanwhile at once.

        A reply comes a token at a time, each in a packet of its own: read as
        it comes, each is a wake-up of the loop and a pass through httpcore,
        h11 and the SDK. A reader that only passes the text on at its next
        frame loses nothing by reading it just before. What is buffered already
        is still read meanwhile; a hold already on is left as it is. Nothing is
        held while something is there to read, nor before the connection has
        been seen to trickle (its last two deliveries TRICKLE_GAP apart): a
        reply that comes at once is read to its end at once.
        """
        self._connection.hold(until)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        connection = self._connection
        if connection.closed is not None or self._transport.is_closing():
            raise httpcore2.WriteError(str(connection.closed or "the connection is closing"))
        # A hold asked while the last reply was read may outlast it: the reply to this request is read as it comes.
        connection.hold_end()
        connection.send_soon(buffer)
        if len(buffer) < SENT_WITH_WHAT_FOLLOWS:
            return
        connection.send()
        if connection.writing_paused:
            connection.drained = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await connection.drained
            except TimeoutError:
                raise httpcore2.WriteTimeout("the upstream took nothing in time") from None
            except OSError as error:
                raise httpcore2.WriteError(str(error)) from error

    async def aclose(self) -> None:
        # Closed before this returns, as anyio's is: a stream closed to stop a reply hangs up on the
        # provider at once. Unsent bytes are dropped: nothing is ever sent after a request we give up on.
        self._transport.abort()
        await self._connection.lost

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError:
            self._transport.close()
            raise httpcore2.ConnectTimeout("the TLS handshake with the upstream took too long") from None
        except (OSError, ssl.SSLError) as error:
            self._transport.close()
            raise httpcore2.ConnectError(str(error)) from error
        self._connection.transport = transport
        return AsyncioStream(transport, self._connection)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # Asked of an idle kept-alive connection: anything that came (bytes or the close) means
            # the server ended it, as a readable socket would for anyio's; a hold may have left it in the kernel.
            connection = self._connection
            return bool(connection.buffer) or connection.closed is not None or connection.socket_readable()
        return None


read_chunks_whole_on(AsyncioStream)


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2._types.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        return await self._connect(
            timeout, socket_options, lambda loop, c: loop.create_connection(lambda: c, host, port, local_addr=local)
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2._types.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        return await self._connect(
            timeout, socket_options, lambda loop, c: loop.create_unix_connection(lambda: c, path)
        )

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    @staticmethod
    async def _connect(timeout, socket_options, open_connection) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        connection = _Connection()
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await open_connection(loop, connection)
        except TimeoutError:
            raise httpcore2.ConnectTimeout("the upstream did not answer the connection in time") from None
        except OSError as error:
            raise httpcore2.ConnectError(str(error)) from error
        sock: socket.socket | None = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return AsyncioStream(transport, connection)


class _LoopEvent:
    """An event for httpcore's pool on the loop alone: a future only once somebody waits, none if it is set before."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future | None = None

    def set(self) -> None:
        self._is_set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def is_set(self) -> bool:
        return self._is_set

    async def wait(self) -> None:
        if self._is_set:
            return  # anyio's yields to the loop once even then: a loop turn per request
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)  # a waiter cancelled does not cancel the event for the others


def _lock_on_the_loop(lock: httpcore2._synchronization.AsyncLock) -> None:
    lock._backend, lock._anyio_lock = "asyncio", asyncio.Lock()


def _event_on_the_loop(event: httpcore2._synchronization.AsyncEvent) -> None:
    event._backend, event._anyio_event = "asyncio", _LoopEvent()


# httpcore's connections each hold two locks, and each request in its pool an event, for as long as a reply
# streams. On asyncio it makes them anyio's, which make their deque of waiters (760 bytes) at once: 2.3 KB of
# every open stream. asyncio's lock and _LoopEvent make nothing until somebody waits, which on this pool
# (no connection limit) is rare. Only the primitives change: httpcore calls them as it did (acquire, release,
# set, wait under anyio's fail_after). The process runs on asyncio alone (daphne's reactor is asyncio's).
httpcore2._synchronization.AsyncLock.setup = _lock_on_the_loop
httpcore2._synchronization.AsyncEvent.setup = _event_on_the_loop


class AsyncioTransport(httpx2.AsyncHTTPTransport):
    """httpx's own transport (its pool, HTTP/1.1, a proxy if given), its sockets on AsyncioBackend."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpx builds the pool and takes no backend for it; the pool reads this when it connects.
        self._pool._network_backend = AsyncioBackend()


class AsyncioHttpxClient(openai.DefaultAsyncHttpxClient):
    """The SDK's default httpx client, its direct connections on AsyncioTransport.

    Given a `transport`, httpx would stop reading HTTP(S)_PROXY and NO_PROXY
    from the environment, so the transport is made where httpx makes its own:
    a deployment that reaches the provider through a proxy still does.
    """

    def _init_transport(self, *, transport: httpx2.AsyncBaseTransport | None = None, **kwargs: Any):
        return transport or AsyncioTransport(**kwargs)
