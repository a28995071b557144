"""Chunked answers read whole chunks at a time (conversations/upstream_chunked.py) read as h11 reads them.

A raw loopback server sends the same chunked body, cut into the same reads,
to a connection of ours and to one of httpcore's own (anyio's sockets, every
chunk through h11): the body, the error if any, and whether the connection
serves the next request must come out the same.
"""

import asyncio

import httpcore2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversations import upstream_chunked
from conversations.upstream_chunked import WholeChunks
from conversations.upstream_socket import AsyncioBackend

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
SECOND_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain"
# Chunks larger than this are left to h11 in these tests (64 KB in the site), so that the examples reach it.
LARGEST_WHOLE_CHUNK = 40


class RawServer:
    """Answers the first request on a connection with `head + body`, cut at `cuts` into writes a moment apart, and
    any later request on it with SECOND_ANSWER; or, `then_close`, closes the connection after the first."""

    def __init__(self, body: bytes, cuts: list[int], then_close: bool = False):
        self.answer = HEAD + body
        self.then_close = then_close
        self.cuts = sorted({cut % (len(self.answer) + 1) for cut in cuts})
        self.connections = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            start = 0
            for cut in [*self.cuts, len(self.answer)]:
                writer.write(self.answer[start:cut])
                await writer.drain()
                await asyncio.sleep(0.002)  # a read of its own (TRICKLE_GAP apart), as a streamed reply's tokens are
                start = cut
            if self.then_close:
                return
            await reader.readuntil(b"\r\n\r\n")
            writer.write(SECOND_ANSWER)
            await writer.drain()
            await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def read(pool: httpcore2.AsyncConnectionPool, url: str) -> bytes | tuple[str, str]:
    """An answer's body, or the error that reading it ended in (a timeout is a failure of the test)."""
    try:
        return (await pool.request("GET", url, extensions={"timeout": {"read": 5}})).content
    except httpcore2.RemoteProtocolError as error:
        return ("RemoteProtocolError", str(error))


async def read_both_ways(body: bytes, cuts: list[int], then_close: bool = False) -> tuple[tuple, tuple]:
    """(ours, h11's): each the first answer and the second read, and how many connections that took."""
    outcomes = []
    for backend in (AsyncioBackend(), None):
        async with (
            RawServer(body, cuts, then_close) as server,
            httpcore2.AsyncConnectionPool(network_backend=backend) as pool,
        ):
            outcomes.append((await read(pool, server.url), await read(pool, server.url), server.connections))
    return outcomes[0], outcomes[1]


def chunked(pieces: list[bytes], extensions: list[bool], trailers: bytes) -> bytes:
    """A chunked body of `pieces`, each with a chunk extension where `extensions` says (it may be longer)."""
    return (
        b"".join(
            b"%x%s\r\n%s\r\n" % (len(p), b";x=1" if e else b"", p) for p, e in zip(pieces, extensions, strict=False)
        )
        + b"0\r\n"
        + trailers
        + b"\r\n"
    )


sse_events = st.binary(min_size=1, max_size=60)
bodies = st.builds(
    chunked,
    st.lists(sse_events, max_size=8),
    st.lists(st.sampled_from([False, False, False, True]), min_size=8, max_size=8),  # True: with an extension
    st.sampled_from([b"", b"X-Trailer: yes\r\n"]),
)


@st.composite
def damaged(draw, body):
    """The body, sometimes with a byte changed, cut short or with garbage after it; and whether it was."""
    damage = draw(st.sampled_from(["none", "byte", "short", "garbage"]))
    if damage == "byte":
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + draw(st.binary(min_size=1, max_size=1)) + body[at + 1 :], True
    if damage == "short":
        return body[: draw(st.integers(0, len(body)))], True
    if damage == "garbage":
        return body + draw(st.binary(min_size=1, max_size=30)), True
    return body, False


@pytest.fixture
def small_whole_chunks(monkeypatch):
    monkeypatch.setattr(upstream_chunked, "LARGEST_WHOLE_CHUNK", LARGEST_WHOLE_CHUNK)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body_damaged=bodies.flatmap(damaged), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_any_chunked_body_in_any_reads_is_read_as_h11_reads_it(small_whole_chunks, body_damaged, cuts):
    body, damaged = body_damaged
    # A damaged body's server hangs up after it: one that promises more than it sends would leave both waiting.
    ours, h11s = asyncio.run(read_both_ways(body, cuts, then_close=damaged))
    if isinstance(h11s[0], tuple) and not isinstance(ours[0], tuple):
        pytest.fail(f"h11 found the body wrong ({h11s[0]}), ours read it as {ours[0]!r}")
    assert ours == h11s


async def test_a_reply_of_many_chunks_in_a_few_reads_comes_out_whole_and_the_connection_serves_the_next():
    events = [b'data: {"choices":[{"delta":{"content":"%d "}}]}\n\n' % i for i in range(300)] + [b"data: [DONE]\n\n"]
    body = chunked(events, [False] * len(events), b"")
    ours, h11s = await read_both_ways(body, [len(HEAD) + 7, 5_000, 5_001, 9_000])
    assert ours == (b"".join(events), b"again", 1)
    assert h11s == ours


def test_whole_chunks_pass_on_each_read_what_is_complete_and_hold_the_rest():
    chunks = WholeChunks()
    assert chunks.feed(b"5\r\nhel") == b""
    assert chunks.feed(b"lo\r\n3\r\n") == b"hello"
    assert chunks.feed(b"abc\r\n2\r\nde\r\n0\r\n\r\n") == b"abcde"
    assert chunks.ended and chunks.rest == b"0\r\n\r\n"


@pytest.mark.parametrize(
    "body",
    [b"5;name=value\r\nhello\r\n", b"zz\r\n", b"5\r\nhelloXY", b"%x\r\n" % (64 * 1024 + 1), b"1" * 30],
    ids=["an extension", "not hexadecimal", "a bad chunk end", "a chunk too large to wait for", "no line end"],
)
def test_what_is_not_a_plain_chunk_is_left_to_h11_from_its_start(body):
    chunks = WholeChunks()
    assert chunks.feed(b"2\r\nok\r\n" + body) == b"ok"
    assert chunks.ended and chunks.rest == body
