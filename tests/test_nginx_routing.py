"""deploy/nginx.conf, run in a real nginx in front of stand-ins for the daphne processes, routes as it promises.

With the shipped map, hash and locations (tests/nginx.py changes only the
certificate, the listen addresses and the upstream's server lines) these tests
prove: every request of one chat reaches the same process, so a reply is
watched and stopped where it is generated, and the chats are spread over the
processes; requests without a chat id are balanced round-robin; a process
added takes chats only for itself (read backwards: a process removed gives up
only its own); the processes learn the client's address, the scheme and the
host from nginx, whatever the client claims; a reply's server-sent events pass
through frame by frame; plain HTTP is redirected to HTTPS.
"""

import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.nginx import HOST, NGINX, render_shipped_config
from tests.servers import free_port

# The hash ring depends on the backends' random ports, so each process's share of the chats varies from run
# to run: with 40 chats one run in 150 left a process under a quarter of them, with 100 the least was 32 %.
CHAT_IDS = range(1, 101)
# Every kind of request a chat's page and its reply make.
CHAT_REQUESTS = [
    ("GET", "/c/{chat}/"),
    ("POST", "/c/{chat}/messages/"),
    ("GET", "/c/{chat}/messages/7/stream/"),
    ("POST", "/c/{chat}/messages/7/stop/"),
    ("GET", "/c/{chat}/events/"),
    ("POST", "/c/{chat}/rename/"),
    ("POST", "/c/{chat}/messages/7/regenerate/"),
    ("GET", "/c/{chat}/export/json/"),
    ("GET", "/c/{chat}/images/3/"),
]
REQUESTS_WITHOUT_CHAT = [
    ("GET", "/"),
    ("POST", "/c/new/messages/"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/healthz"),
    ("GET", "/accounts/login/"),
    ("GET", "/search/"),
]
WAIT = 3  # seconds: the longest any step may take here before it counts as a failure
# Longer than WAIT, so that a stream nginx holds back makes the client time out first.
STREAM_HOLD_LIMIT = 10


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    host: str | None
    real_ip: str | None
    forwarded_proto: str | None


class Backend(ThreadingHTTPServer):
    """A stand-in for one daphne process: answers with its name in X-Backend and keeps what it was sent."""

    def __init__(self, name: str):
        super().__init__(("127.0.0.1", 0), BackendRequestHandler)
        self.name = name
        self.seen: list[SeenRequest] = []
        # A reply's stream sends its first frame, then waits for this before its last one (set: it does not wait).
        self.stream_may_end = threading.Event()
        self.stream_may_end.set()
        self.stream_ended = threading.Event()

    @property
    def port(self) -> int:
        return self.server_address[1]


class BackendRequestHandler(BaseHTTPRequestHandler):
    server: Backend

    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append(
            SeenRequest(
                self.command,
                self.path,
                self.headers["Host"],
                self.headers["X-Real-IP"],
                self.headers["X-Forwarded-Proto"],
            )
        )
        self.send_response(200)
        self.send_header("X-Backend", self.server.name)
        if self.path.endswith("/stream/"):
            self.reply_stream()
        else:
            self.end_headers()
            self.wfile.write(self.server.name.encode())

    do_POST = do_GET

    def reply_stream(self):
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b"data: first\n\n")
        self.server.stream_may_end.wait(STREAM_HOLD_LIMIT)
        self.wfile.write(b"data: last\n\n")
        self.server.stream_ended.set()

    def log_message(self, format, *args):
        pass  # one line a request would bury a failure's output


@contextmanager
def backends_serving(names: Sequence[str]) -> Iterator[list[Backend]]:
    with ExitStack() as stack:
        backends = [stack.enter_context(backend_serving(name)) for name in names]
        yield backends


@contextmanager
def backend_serving(name: str) -> Iterator[Backend]:
    backend = Backend(name)
    # Polled often, so that its shutdown at teardown is quick.
    thread = threading.Thread(target=backend.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        backend.stream_may_end.set()  # a stream a failed test left held ends now
        backend.shutdown()
        backend.server_close()
        thread.join(WAIT)


@dataclass(frozen=True)
class NginxPorts:
    https: int
    http: int


@contextmanager
def nginx_serving(directory: Path, backends: Sequence[Backend]) -> Iterator[NginxPorts]:
    """nginx in the foreground with the shipped config, on loopback ports, in front of backends."""
    directory.mkdir(exist_ok=True)
    ports = NginxPorts(https=free_port(), http=free_port())
    config = render_shipped_config(
        directory, https_port=ports.https, http_port=ports.http, backend_ports=[backend.port for backend in backends]
    )
    with (directory / "nginx.log").open("w+") as log:
        process = subprocess.Popen(
            [NGINX, "-p", str(directory), "-c", str(config), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers with it in a process group of their own
        )
        try:
            wait_for_listening(ports, process, log)
            yield ports
        finally:
            process.terminate()  # nginx's fast shutdown, which stops its workers too
            try:
                process.wait(WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_for_listening(ports: NginxPorts, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"nginx exited with status {process.returncode}:\n{log.read()}")
        try:
            for port in (ports.https, ports.http):
                socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def https_client(port: int) -> Iterator[httpx.Client]:
    # The certificate is self-signed; trust_env=False keeps the environment's proxies off loopback.
    with httpx.Client(
        base_url=f"https://127.0.0.1:{port}", headers={"Host": HOST}, verify=False, trust_env=False, timeout=WAIT
    ) as client:
        yield client


def backend_of(client: httpx.Client, method: str, path: str) -> str:
    response = client.request(method, path)
    assert response.status_code == 200, (method, path, response.status_code, response.text)
    return response.headers["X-Backend"]


def backends_of_chats(client: httpx.Client) -> dict[int, str]:
    return {chat: backend_of(client, "GET", f"/c/{chat}/") for chat in CHAT_IDS}


@pytest.fixture
def backends():
    with backends_serving(["backend-a", "backend-b"]) as started:
        yield started


@pytest.fixture
def nginx(tmp_path, backends):
    with nginx_serving(tmp_path, backends) as ports:
        yield ports


@pytest.fixture
def client(nginx):
    with https_client(nginx.https) as client:
        yield client


def test_every_request_of_one_chat_reaches_the_same_process(client, backends):
    served_by = {
        chat: {backend_of(client, method, path.format(chat=chat)) for method, path in CHAT_REQUESTS}
        for chat in CHAT_IDS
    }

    split = {chat: names for chat, names in served_by.items() if len(names) > 1}
    assert not split, f"chats whose requests reached several processes: {split}"
    chats_per_backend = Counter(names.pop() for names in served_by.values())
    assert chats_per_backend.keys() == {backend.name for backend in backends}, chats_per_backend
    assert min(chats_per_backend.values()) >= len(CHAT_IDS) / 4, chats_per_backend


def test_requests_without_a_chat_are_balanced_round_robin(client, backends):
    for method, path in REQUESTS_WITHOUT_CHAT:
        # Round-robin over two processes: two requests in a row reach both.
        served_by = {backend_of(client, method, path) for _ in range(2)}

        assert served_by == {backend.name for backend in backends}, (method, path, served_by)


def test_a_process_added_takes_chats_only_for_itself(tmp_path):
    with backends_serving(["backend-a", "backend-b", "backend-added"]) as (first, second, added):
        with nginx_serving(tmp_path / "two", [first, second]) as ports, https_client(ports.https) as client:
            before = backends_of_chats(client)
        with nginx_serving(tmp_path / "three", [first, second, added]) as ports, https_client(ports.https) as client:
            after = backends_of_chats(client)

    moved_to = {chat: after[chat] for chat in CHAT_IDS if after[chat] != before[chat]}
    assert set(moved_to.values()) == {added.name}, f"chats that moved, and where to: {moved_to}"


def test_the_processes_learn_the_client_address_the_scheme_and_the_host_from_nginx(client, backends):
    # What a client claims in these headers must never reach the site, which trusts them.
    forged = {"X-Real-IP": "203.0.113.9", "X-Forwarded-Proto": "http"}
    for path in ("/c/5/", "/c/5/messages/", "/v1/chat/completions", "/"):
        client.post(path, headers=forged).raise_for_status()

    seen = [request for backend in backends for request in backend.seen]
    assert len(seen) == 4
    assert {(request.host, request.real_ip, request.forwarded_proto) for request in seen} == {
        (HOST, "127.0.0.1", "https")
    }


def test_a_replys_events_pass_through_as_they_are_sent(client, backends):
    for backend in backends:
        backend.stream_may_end.clear()

    try:
        with client.stream("GET", "/c/5/messages/7/stream/") as response:
            chunks = response.iter_bytes()
            first = next(chunks)
            still_open = not any(backend.stream_ended.is_set() for backend in backends)
            for backend in backends:
                backend.stream_may_end.set()
            rest = b"".join(chunks)
    except httpx.ReadTimeout:
        pytest.fail(f"nothing came for {WAIT} s while the process held the stream open after its first frame")

    assert response.headers["Content-Type"] == "text/event-stream"
    assert first == b"data: first\n\n"
    assert still_open, "the first frame came only once the process had ended the stream"
    assert rest == b"data: last\n\n"


def test_plain_http_is_redirected_to_https_on_the_same_path(nginx, backends):
    response = httpx.get(
        f"http://127.0.0.1:{nginx.http}/c/5/?q=a", headers={"Host": HOST}, trust_env=False, timeout=WAIT
    )

    assert response.status_code == 301
    assert response.headers["Location"] == f"https://{HOST}/c/5/?q=a"
    assert not any(backend.seen for backend in backends)
