"""The upstream's chunked answers read a whole chunk at a time, on our connections, instead of through h11.

A streamed reply comes with `Transfer-Encoding: chunked`, one chunk an event.
httpcore reads each chunk as h11 events (the chunk's data, then a wait for
more), each through h11's state machine and its own exception mapping: about
20 µs of CPU a chunk here, a fifth of relaying one. `WholeChunks` cuts the
plain chunks out of what a read brings, all of them in one pass, and hands
the rest of the body to h11 at the first thing that is not a plain chunk:
the last chunk and its trailers, a chunk extension, anything malformed (h11
then says what is wrong, as it did), a chunk too large to wait for whole.
h11 is handed the body at a chunk's start, where its reader stands when the
head has been read, so it ends the message and keeps the connection for the
next request as it always did.

Only the connections of our own backend read this way (upstream_socket
installs it for AsyncioStream); those of any other go through h11 as before.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

import h11
import httpcore2
from h11._readers import ChunkedReader

# A chunk is waited for whole only up to this size (the SSE events of a reply are well under a KB); a larger
# one, or anything that has not become a chunk by then, is left to h11, which passes on its data as it comes.
LARGEST_WHOLE_CHUNK = 64 * 1024
# A plain chunk's size line: hexadecimal digits (as many as h11 takes) and CRLF, no extension.
_SIZE_DIGITS = 20
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,%d})\r\n" % _SIZE_DIGITS)
_LONGEST_SIZE_LINE = _SIZE_DIGITS + len(b"\r\n")


class WholeChunks:
    """The data of a chunked body's plain chunks, from its bytes as they come; the rest is for h11.

    `feed` returns the data of every chunk now complete, and keeps what
    follows them; once `ended`, `rest` is the body from the chunk h11 reads
    on (the last one, or one that is not plain), and nothing more is fed.
    """

    __slots__ = ("ended", "rest")

    def __init__(self) -> None:
        self.rest = b""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        buffer = self.rest + data if self.rest else data
        pieces = []
        start = 0
        end = len(buffer)
        while start < end:
            size_line = _SIZE_LINE.match(buffer, start)
            if size_line is None:
                # Not a plain size line (yet): an extension or garbage once a line end or enough bytes are there.
                head = buffer[start : start + _LONGEST_SIZE_LINE]
                self.ended = b"\n" in head or len(head) >= _LONGEST_SIZE_LINE
                break
            size = int(size_line[1], 16)
            if size == 0 or size > LARGEST_WHOLE_CHUNK:
                self.ended = True
                break
            data_end = size_line.end() + size
            if end < data_end + 2:
                break  # the rest of this chunk is still to come
            if buffer[data_end : data_end + 2] != b"\r\n":
                self.ended = True  # h11 reads the chunk and says its end is malformed
                break
            pieces.append(buffer[size_line.end() : data_end])
            start = data_end + 2
        self.rest = buffer[start:]
        if len(self.rest) > LARGEST_WHOLE_CHUNK:
            self.ended = True
        return b"".join(pieces)  # one piece is returned as it is, not copied


def read_chunks_whole_on(stream_type: type[httpcore2.AsyncNetworkStream]) -> None:
    """From now on the HTTP/1.1 connections over `stream_type` read the plain chunks of a chunked body whole."""
    read_by_h11 = httpcore2.AsyncHTTP11Connection._receive_response_body

    async def _receive_response_body(
        self: httpcore2.AsyncHTTP11Connection, request: httpcore2.Request
    ) -> AsyncGenerator[bytes]:
        if isinstance(self._network_stream, stream_type) and _a_fresh_chunked_body(self._h11_state):
            timeout = request.extensions.get("timeout", {}).get("read")
            buffered = self._h11_state._receive_buffer  # what came with the head: taken, h11 is given the rest back
            chunks = WholeChunks()
            data = bytes(buffered.maybe_extract_at_most(len(buffered)) or b"")
            while True:
                if body := chunks.feed(data):
                    yield body
                if chunks.ended:
                    break
                data = await self._network_stream.read(self.READ_NUM_BYTES, timeout=timeout)
                if not data:
                    break
            # h11 reads on from here: the end of the body, or what is wrong with it (an end of the
            # connection included, which our stream reports again when h11 reads).
            self._h11_state.receive_data(chunks.rest)
        async for body in read_by_h11(self, request):
            yield body

    httpcore2.AsyncHTTP11Connection._receive_response_body = _receive_response_body


def _a_fresh_chunked_body(state: h11.Connection) -> bool:
    """Whether h11 has read the head of a chunked answer and nothing of its body."""
    reader = state._reader  # h11 keeps the body's reader private; its start is all this reads of it
    return (
        state.their_state is h11.SEND_BODY
        and type(reader) is ChunkedReader
        and reader._bytes_in_chunk == 0
        and not reader._bytes_to_discard
        and not reader._reading_trailer
        and not state.trailing_data[1]
    )
