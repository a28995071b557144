"""The upstream's connections (conversations/upstream_socket.py): HTTPS as the provider speaks it, kept-alive
connections the provider ends, a proxy from the environment, large requests and a provider slow to take them.

The rest of what the connections do (cuts, hangs, timeouts, closing a stream,
reusing a connection) is in test_upstream_client.py and test_upstream_failures.py.
"""

import asyncio
import contextlib
import os
import resource
import ssl
from urllib.parse import urlsplit

import httpcore2
import httpx2
import pytest
import trustme

from conversations.llm import UpstreamError, stream_open
from conversations.upstream_socket import HIGH_WATER, AsyncioBackend, AsyncioHttpxClient, AsyncioStream
from tests.fake_upstream import FakeUpstream, Reply

MESSAGES = [{"role": "user", "content": "Hello?"}]


@pytest.fixture(scope="module")
def authority():
    return trustme.CA()


@pytest.fixture(scope="module")
def https_upstream(authority):
    """The fake upstream over HTTPS, with a certificate for 127.0.0.1 from `authority`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with FakeUpstream(ssl_context=context) as fake:
        yield fake


@pytest.fixture
def pointed_at(settings):
    """Points the site at a fake upstream for this test."""

    def point(fake: FakeUpstream) -> FakeUpstream:
        fake.reset()
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-upstream-secret"
        settings.UPSTREAM_RETRY_BASE_DELAY = 0.01
        return fake

    return point


async def reply_text() -> str:
    stream = await stream_open({"model": "gpt-4o-mini", "messages": MESSAGES})
    try:
        return "".join([text async for text in stream.deltas()])
    finally:
        await stream.close()


async def test_a_reply_streams_whole_over_https_on_one_kept_alive_connection(
    https_upstream, pointed_at, authority, tmp_path, monkeypatch
):
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # read when the client is built, as a deployment's would be
    fake = pointed_at(https_upstream)
    fake.script(Reply(chunks=["Über ", "日本 ", "🙂"]), Reply(text="Again"))

    assert await reply_text() == "Über 日本 🙂"
    assert await reply_text() == "Again"

    first, second = fake.requests
    assert first.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert first.peer == second.peer


async def test_a_provider_whose_certificate_is_not_trusted_never_hears_the_request(https_upstream, pointed_at):
    fake = pointed_at(https_upstream)  # no SSL_CERT_FILE: the system's authorities do not know the test's

    with pytest.raises(UpstreamError) as raised:
        await reply_text()

    assert raised.value.code == "connection_failed"
    assert fake.requests == []  # nor our provider key


async def test_a_connection_the_provider_closed_while_idle_is_not_used_again(pointed_at):
    with FakeUpstream(keepalive_timeout=0.2) as fake:
        pointed_at(fake)
        fake.script(Reply(text="First"), Reply(text="Second"))

        assert await reply_text() == "First"
        await asyncio.sleep(0.6)  # the provider closes the idle connection
        assert await reply_text() == "Second"

        first, second = fake.requests
        assert first.peer != second.peer


async def test_a_provider_reached_through_a_proxy_from_the_environment_still_is(upstream, monkeypatch, settings):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{upstream.port}")  # the fake takes the proxy's part too
    settings.OPENAI_BASE_URL = "http://provider.invalid/v1"  # resolvable by the proxy alone
    upstream.script(Reply(text="Through the proxy"))

    assert await reply_text() == "Through the proxy"
    assert upstream.requests[0].path == "/v1/chat/completions"


async def test_a_request_larger_than_the_sockets_buffers_reaches_the_provider_whole(upstream):
    # A long chat or images as data URLs: written as the provider takes them, more than a socket takes at once.
    prompt = "".join(f"{n:07d} Grüße 日本語 🙂\n" for n in range(30_000))  # 0.9 MB: under the fake's 1 MB cap
    upstream.script(Reply(text="Read it"))

    stream = await stream_open({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]})
    try:
        assert "".join([text async for text in stream.deltas()]) == "Read it"
    finally:
        await stream.close()

    assert upstream.requests[0].json["messages"][0]["content"] == prompt


async def test_a_request_goes_to_the_provider_in_one_send(upstream, monkeypatch):
    """httpcore writes a request's head and body apart: they leave in one send, each costing the CPU of one."""
    port = urlsplit(upstream.base_url).port
    sent = []
    write = asyncio.selector_events._SelectorSocketTransport.write

    def counted(transport, data):
        if transport.get_extra_info("peername")[1] == port:
            sent.append(bytes(data))
        return write(transport, data)

    monkeypatch.setattr(asyncio.selector_events._SelectorSocketTransport, "write", counted)
    upstream.script(Reply(text="Hi"))

    stream = await stream_open({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]})
    try:
        assert "".join([text async for text in stream.deltas()]) == "Hi"
    finally:
        await stream.close()

    assert len(sent) == 1
    assert sent[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and sent[0].endswith(b"}")
    assert upstream.requests[0].json["messages"] == [{"role": "user", "content": "Hello"}]


@contextlib.asynccontextmanager
async def slow_reader(starts_reading_after: float):
    """A server that reads nothing for `starts_reading_after` seconds (None: never), then all; yields its port
    and what it read."""
    received = bytearray()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if starts_reading_after is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(starts_reading_after)
        while data := await reader.read(1 << 20):
            received.extend(data)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()


# More than the kernel's socket buffers on both sides take (tcp_wmem and tcp_rmem top out at a few MB).
BIG = bytes(range(256)) * (128 * 1024)  # 32 MB


async def test_a_write_waits_for_a_slow_provider_to_take_it_and_arrives_whole():
    async with slow_reader(starts_reading_after=0.3) as (port, received):
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        await stream.write(BIG, timeout=30)
        for _ in range(300):
            if len(received) == len(BIG):
                break
            await asyncio.sleep(0.01)
        await stream.aclose()

    assert received == BIG


async def test_a_write_a_provider_never_takes_times_out():
    async with slow_reader(starts_reading_after=None) as (port, _):
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        with pytest.raises(httpcore2.WriteTimeout):
            await stream.write(BIG, timeout=0.3)
        await stream.aclose()


@contextlib.asynccontextmanager
async def sender(*pieces: bytes, apart: float):
    """A server that sends `pieces`, `apart` seconds from each other, to whoever connects; yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(apart)
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.contextmanager
def descriptors_taken(count: int):
    """`count` more file descriptors held open, so that the next socket's number is past them all."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    taken = []
    try:
        for _ in range(count):
            taken.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for descriptor in taken:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def read_after_asking_a_hold(stream: AsyncioStream, seconds: float) -> tuple[bytes, float]:
    """Ask the stream to hold for `seconds`, then read: what came, and how long after the asking."""
    loop = asyncio.get_running_loop()
    asked_at = loop.time()
    stream.hold(asked_at + seconds)
    later = await stream.read(1024, timeout=5)
    return later, loop.time() - asked_at


# A process relaying a thousand streams has two thousand sockets open: select() refuses any past the 1,024th.
@pytest.mark.parametrize("descriptors_before", [0, 1100], ids=["a first socket", "a socket past the 1024th"])
async def test_a_held_connection_reads_what_came_meanwhile_in_one_piece_when_the_hold_ends(descriptors_before):
    async with contextlib.AsyncExitStack() as taken:
        taken.enter_context(descriptors_taken(descriptors_before))
        port = await taken.enter_async_context(sender(b"first", b"-second", b"-third", b"-fourth", apart=0.02))
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert stream.get_extra_info("socket").fileno() > descriptors_before
        assert await stream.read(1024, timeout=5) == b"first"
        assert await stream.read(1024, timeout=5) == b"-second"  # it trickles: a hold is worth it

        later, after = await read_after_asking_a_hold(stream, 0.2)

        assert later == b"-third-fourth"
        assert after >= 0.2
        await stream.aclose()


async def test_more_than_a_connection_buffers_arrives_whole_after_a_hold():
    """A hold and a full buffer both stop the socket's reading; either ending alone does not start it again."""
    loop = asyncio.get_running_loop()
    async with sender(b"first", b"-second", BIG[: 3 * HIGH_WATER], apart=0.02) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert await stream.read(1024, timeout=5) == b"first"
        assert await stream.read(1024, timeout=5) == b"-second"
        stream.hold(loop.time() + 0.1)
        received = bytearray()
        while len(received) < 3 * HIGH_WATER:
            received += await stream.read(64 * 1024, timeout=5)
            if len(received) == 64 * 1024:
                stream.hold(loop.time() + 0.05)  # with the buffer full: reading waits for both
        await stream.aclose()

    assert received == BIG[: 3 * HIGH_WATER]


async def test_a_connection_with_something_to_read_is_not_held():
    """A reply that has come whole (a fast one's end) is read at once, not a frame later."""
    async with sender(b"first", b"-second", b"-third", apart=0.05) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert await stream.read(1024, timeout=5) == b"first"
        assert await stream.read(1024, timeout=5) == b"-second"  # it trickles
        await asyncio.sleep(0.15)  # "-third" waits in the kernel

        later, after = await read_after_asking_a_hold(stream, 5)

        assert later == b"-third"
        assert after < 1
        await stream.aclose()


async def test_a_connection_not_yet_seen_to_trickle_is_not_held():
    """A reply that comes at once has its end read as it comes, not held back to the next frame."""
    async with sender(b"first", b"-the-rest", apart=0.05) as port:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert await stream.read(1024, timeout=5) == b"first"  # one delivery: nothing says it trickles

        later, after = await read_after_asking_a_hold(stream, 5)

        assert later == b"-the-rest"
        assert after < 1
        await stream.aclose()


@contextlib.asynccontextmanager
async def trickling_echo(then_close: bool = False):
    """A server that trickles two pieces to whoever connects, then echoes what it is sent (or hangs up)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in (b"first", b"-second"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        while not then_close and (request := await reader.read(1024)):
            writer.write(b"echo:" + request)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", server.sockets[0].getsockname()[1], timeout=5)
        assert await stream.read(1024, timeout=5) == b"first"
        assert await stream.read(1024, timeout=5) == b"-second"  # it trickles: a hold is taken
        yield stream
        await stream.aclose()
    finally:
        server.close()


async def test_a_hold_left_by_the_last_reply_does_not_hold_the_next_one():
    """A reply read in frames asks a hold that may outlast it; the next request on the kept-alive connection
    has its reply read as it comes, not when that hold ends (it was up to a frame, 45 ms, per call)."""
    loop = asyncio.get_running_loop()
    async with trickling_echo() as stream:
        stream.hold(loop.time() + 60)  # the last reply's, asked after its end was read

        asked_at = loop.time()
        await stream.write(b"next request")
        answer = await stream.read(1024, timeout=5)

        assert answer == b"echo:next request"
        assert loop.time() - asked_at < 5


async def test_a_held_idle_connection_the_provider_closed_is_not_used_again():
    """The pool asks an idle connection whether anything came: with a hold on, the provider's close waits in
    the kernel, and still counts."""
    loop = asyncio.get_running_loop()
    async with trickling_echo(then_close=True) as stream:
        stream.hold(loop.time() + 60)
        await asyncio.sleep(0.1)  # the provider hangs up meanwhile

        assert stream.get_extra_info("is_readable")


async def test_calls_beyond_the_pools_connections_wait_their_turn_and_one_given_up_leaves_the_rest(upstream):
    """httpcore's locks and its pool's events run on asyncio's own (upstream_socket.py): a call that waits for a
    connection gets one when it is free, and a call given up while waiting takes nothing with it."""
    upstream.script(Reply(chunks=["slow "] * 5, first_delay=0.2, delay=0.05), Reply(text="next"))
    headers = {"Authorization": "Bearer sk-upstream-secret"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    async with AsyncioHttpxClient(limits=httpx2.Limits(max_connections=1), trust_env=False, timeout=5) as client:
        url = f"{upstream.base_url}/chat/completions"
        async with client.stream("POST", url, json=body | {"stream": True}, headers=headers) as first:
            given_up = asyncio.create_task(client.post(url, json=body, headers=headers))
            waiting = asyncio.create_task(client.post(url, json=body, headers=headers))
            await asyncio.sleep(0.1)
            assert not given_up.done() and not waiting.done()  # the one connection is the first call's
            given_up.cancel()
            streamed = b"".join([piece async for piece in first.aiter_bytes()])

        async with asyncio.timeout(5):
            answer = await waiting
        with pytest.raises(asyncio.CancelledError):
            await given_up

    assert streamed.count(b"slow ") == 5
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == "next"
    assert len(upstream.requests) == 2
