"""chatsite.serve, the site's server as deployed, runs daphne on uvloop's event loop, writing through to sockets."""

import hashlib
import os
import socket
import subprocess
import sys
import time

import httpx

from tests import streaming_app
from tests.servers import REPO_ROOT, served


def test_daphne_runs_on_uvloops_event_loop():
    # daphne makes its loop as it is imported: a policy set any later would leave it on asyncio's own loop.
    probe = "import chatsite.serve, daphne.server; print(type(daphne.server.twisted_loop).__module__)"

    loop_module = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()

    assert loop_module == "uvloop"


# Twisted's connections write through to the socket under chatsite.serve: whatever the socket takes at once
# is sent at once, the rest is buffered behind it. What a client gets must not change.


def test_a_client_that_reads_late_gets_every_byte_in_order():
    with served("tests.streaming_app:application", ready_path="/ended") as url, httpx.Client(trust_env=False) as client:
        with client.stream("GET", f"{url}/big", timeout=60) as response:
            time.sleep(0.5)  # meanwhile the server's writes fill the socket, and the rest waits in its buffer
            body = response.read()

    assert len(body) == len(streaming_app.BIG) + sum(len(streaming_app.piece(n)) for n in range(streaming_app.PIECES))
    assert body == streaming_app.BIG + b"".join(streaming_app.piece(n) for n in range(streaming_app.PIECES))


def test_an_answer_reaches_its_client_in_one_send_its_headers_with_its_body():
    # Sent apart, the headers wake the client, which on a busy machine runs before the body follows.
    with served("tests.streaming_app:application", ready_path="/ended") as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(b"GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello"):
                answer += client.recv(65536)
            client_port = client.getsockname()[1]
            sends = httpx.get(f"{url}/sends?port={client_port}", timeout=10).text

    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sends == "1"


def test_a_client_gone_mid_stream_ends_it_and_the_server_serves_on():
    with served("tests.streaming_app:application", ready_path="/ended") as url, httpx.Client(trust_env=False) as client:
        with client.stream("GET", f"{url}/endless", timeout=10) as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(5)] == [f"piece {n}" for n in range(5)]

        deadline = time.monotonic() + 5
        while client.get(f"{url}/ended").text != "1":
            assert time.monotonic() < deadline, "the stream did not end when its client went"
            time.sleep(0.05)


def test_a_body_of_many_pieces_reaches_the_app_whole_and_in_order():
    # daphne hands a body to the app 8 KB a message, all queued before the app reads the first, through
    # chatsite.serve's RequestMessages rather than an asyncio.Queue.
    body = os.urandom(3 * 1024 * 1024 + 17)

    with served("tests.streaming_app:application", ready_path="/ended") as url, httpx.Client(trust_env=False) as client:
        answer = client.post(f"{url}/echo", content=body, timeout=30).text

    assert answer == f"{len(body)} {hashlib.sha256(body).hexdigest()} RequestMessages"
