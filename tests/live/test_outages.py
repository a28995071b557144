"""PostgreSQL and Redis stopped and started again under load, under two daphne processes.

Each test has its own throwaway PostgreSQL and Redis (the session's are shared
by every other test, so they cannot be stopped): replies and /v1 calls are in
flight when one of them stops; every request must then answer 503 without
reaching the upstream, /healthz must name the part that failed, and once it is
back both processes must serve again by themselves, with no reply left stuck
and no budget left reserved once the sweep has run.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import openai
import psycopg
import pytest

from accounts.models import Reservation, User
from conversations.models import Message
from tests.conftest import HTMX, PASSWORD
from tests.fake_upstream import Reply
from tests.live.conftest import HTTP_TIMEOUT, login, reply_watch, same_session, site_env, stream_url
from tests.servers import REPO_ROOT, free_port, site_server

DATABASE_DOWN = "The site cannot reach its database right now."
REDIS_DOWN = "The site cannot reach its cache (Redis) right now."
# Seconds a request waits for a pooled connection before its 503, while PostgreSQL is down.
POOL_TIMEOUT = "1"
# Back within this many seconds of PostgreSQL or Redis (the pool gives up a failed reconnect after 1 s).
RECOVERY_SECONDS = 10
# The first reply in flight ends while PostgreSQL or Redis is down, the others after it is back.
ENDS_IN_OUTAGE = Reply(chunks=[f"s{i} " for i in range(10)], delay=0.1)
ENDS_AFTER = Reply(chunks=[f"w{i} " for i in range(60)], delay=0.1)


def _postgres_bin() -> Path | None:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A PostgreSQL cluster of its own on a free loopback port, with a database `chatsite`, that can stop and start."""

    def __init__(self, directory: Path):
        bin_dir = _postgres_bin()
        if bin_dir is None or not shutil.which("redis-server"):
            pytest.skip("PostgreSQL's server binaries and redis-server are needed (make test installs them)")
        self.bin = bin_dir
        # PostgreSQL refuses to run as root: as root, run it as the postgres user, as scripts/test.sh does.
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_pg:
            shutil.chown(directory, "postgres")
        self.data = directory / "data"
        self.port = free_port()
        password = "outage-test-password"
        self.url = f"postgres://chatsite:{password}@127.0.0.1:{self.port}/chatsite"
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")  # fmt: skip
        settings = f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{directory}'\n"
        settings += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        self._run("sh", "-c", f"cat >> {self.data}/postgresql.conf", input=settings)
        self.start()
        self._run("psql", "-q", "-h", directory, "-p", self.port, "-U", "postgres", "-d", "postgres",
                  "-c", f"CREATE ROLE chatsite LOGIN PASSWORD '{password}'",
                  "-c", "CREATE DATABASE chatsite OWNER chatsite")  # fmt: skip

    def _run(self, program: str, *args, input: str | None = None) -> None:
        executable = str(self.bin / program) if (self.bin / program).exists() else program
        command = [*self.as_pg, executable, *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, input=input, timeout=60, check=False)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.data.parent / "postgres.log", "-w", "-t", "30", "start")

    def stop(self) -> None:
        # "fast": what a restart does to the site's connections, which are cut.
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        subprocess.run([*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=30, check=False)  # fmt: skip

    def rows(self, query: str, *params) -> list[tuple]:
        with psycopg.connect(self.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            return conn.execute(query, params).fetchall()


class Redis:
    """A redis-server of its own on a free loopback port, without persistence; stop() and start() keep its port."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_until(lambda: _redis_answers(self.port), 10, "Redis did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_until(condition: Callable[[], bool], seconds: float, failure: Callable[[], str]) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        time.sleep(0.2)


@dataclass
class Stack:
    postgres: Postgres
    redis: Redis
    env: dict[str, str]
    sites: list[str]
    api_key: str


def manage(env: dict[str, str], *args: str) -> str:
    """Run a manage.py command against the stack; its output."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=os.environ | env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def stack(fake_upstream, tmp_path_factory) -> Iterator[Stack]:
    """PostgreSQL and Redis of this module's own, migrated and seeded, with two daphne processes on them."""
    # Not under pytest's tmp_path: the postgres user must be able to reach the data directory.
    directory = Path(tempfile.mkdtemp(prefix="chatsite-outages-"))
    directory.chmod(0o755)
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        (directory / "pg").mkdir()
        (directory / "redis").mkdir()
        postgres = Postgres(directory / "pg")
        cleanup.callback(postgres.destroy)
        redis = Redis(directory / "redis")
        cleanup.callback(redis.stop)
        env = site_env(
            tmp_path_factory.mktemp("outages-var"),
            DATABASE_URL=postgres.url,
            REDIS_URL=redis.url,
            OPENAI_BASE_URL=fake_upstream.base_url,
            DB_POOL_TIMEOUT=POOL_TIMEOUT,
        )
        manage(env, "migrate", "--noinput")
        manage(env, "seedcatalog")
        manage(env | {"DJANGO_SUPERUSER_PASSWORD": PASSWORD}, "createsuperuser", "--noinput",
               "--username", "alice", "--email", "alice@example.com")  # fmt: skip
        api_key = manage(env, "createapikey", "alice").strip()
        sites = [cleanup.enter_context(site_server(env)) for _ in range(2)]
        yield Stack(postgres, redis, env, sites, api_key)


@pytest.fixture
def browsers(stack) -> Iterator[list[httpx.Client]]:
    """Alice logged in on each process, with one session."""
    first = login(stack.sites[0], User(username="alice"))
    second = same_session(first, stack.sites[1])
    yield [first, second]
    first.close()
    second.close()


def api(stack: Stack, site: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{site}/v1", api_key=stack.api_key, max_retries=0, timeout=15)


def chat_send(client: httpx.Client, text: str, **headers: str) -> httpx.Response:
    return client.post("/c/new/messages/", data={"text": text}, headers=headers)


def chat_start(stack: Stack, client: httpx.Client, text: str) -> tuple[int, int]:
    """A new chat's first message, as a browser without JavaScript sends it: (chat id, reply id)."""
    response = chat_send(client, text)
    assert response.status_code == 302, f"HTTP {response.status_code}: {response.text[:300]}"
    conversation_id = int(response.headers["location"].strip("/").split("/")[-1])
    [(reply_id,)] = stack.postgres.rows(
        f"SELECT id FROM {Message._meta.db_table} WHERE conversation_id = %s AND role = %s",
        conversation_id,
        str(Message.Role.ASSISTANT),
    )
    return conversation_id, reply_id


def api_stream_in_background(stack: Stack, site: str) -> threading.Thread:
    """A streamed /v1 call, read to its end in a thread."""

    def read() -> None:
        try:
            stream = api(stack, site).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Tell me slowly"}], stream=True
            )
            for _ in stream:
                pass
        except openai.APIError:
            pass  # the outage may cut it short: what it leaves behind in the database is what counts

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@dataclass
class Load:
    started_at: datetime  # the database's clock
    api_calls: list[threading.Thread]


def load_start(stack: Stack, browsers: list[httpx.Client], upstream) -> Load:
    """On each process a chat reply and a streamed /v1 call, in flight at the upstream."""
    [(started_at,)] = stack.postgres.rows("SELECT now()")
    upstream.script(ENDS_IN_OUTAGE, ENDS_AFTER, ENDS_AFTER, ENDS_AFTER)
    for i, client in enumerate(browsers):
        chat_start(stack, client, f"Tell me a long story {i}")
    api_calls = [api_stream_in_background(stack, site) for site in stack.sites]
    upstream.wait_for_requests(4, timeout=10)
    return Load(started_at, api_calls)


def healthz(site: str) -> tuple[int, dict]:
    response = httpx.get(f"{site}/healthz", timeout=HTTP_TIMEOUT, trust_env=False)
    return response.status_code, response.json()


def api_call_error(stack: Stack, site: str) -> openai.APIStatusError | None:
    try:
        api(stack, site).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    except openai.APIStatusError as error:
        return error
    return None


def outage_answers(upstream, *calls: Callable[[], object]) -> list[object]:
    """What the calls get, in parallel (each waits for the pool's timeout while PostgreSQL is down).

    The outage lasts until the first reply in flight has been read whole from
    the upstream, so that its final save meets it.
    """
    answers = all_at_once(*calls)
    _wait_until(lambda: upstream.requests[0].finished, 10, lambda: "the first reply in flight did not end")
    time.sleep(0.5)  # for the final save to be tried: not an assertion
    return answers


def all_at_once(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in parallel threads: each waits for the pool's timeout while PostgreSQL is down."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def assert_site_recovers(stack: Stack, browsers: list[httpx.Client], load: Load) -> None:
    """Both processes serve again by themselves; nothing of what was in flight stays stuck or reserved."""
    for site in stack.sites:
        _wait_until(lambda site=site: healthz(site)[0] == 200, RECOVERY_SECONDS,
                    lambda site=site: f"{site}/healthz still answers {healthz(site)}")  # fmt: skip
    for i, (site, client) in enumerate(zip(stack.sites, browsers, strict=True)):
        conversation_id, reply_id = chat_start(stack, client, f"Are you back {i}?")
        _, status = reply_watch(client, stream_url(conversation_id, reply_id))
        stored = stack.postgres.rows(
            "SELECT status, error_code, error_text FROM conversations_message WHERE id = %s", reply_id
        )
        assert status == "complete", f"a new reply on {site} ended {status}, stored as {stored}"
        completion = api(stack, site).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Back?"}]
        )
        assert completion.choices[0].message.content == "Hello from the fake upstream."
    for call in load.api_calls:
        call.join(timeout=20)
        assert not call.is_alive(), "a /v1 stream that was in flight never ended"

    def stuck() -> list[tuple]:
        return stack.postgres.rows(
            f"SELECT id, status FROM {Message._meta.db_table} WHERE status = ANY(%s) AND created_at >= %s",
            [str(status) for status in Message.LIVE_STATUSES],
            load.started_at,
        )

    # The reply runner retries its final save until the database answers again.
    _wait_until(lambda: not stuck(), RECOVERY_SECONDS, lambda: f"replies stuck after the outage: {stuck()}")
    manage(stack.env, "sweep")
    held = f"SELECT id, tokens FROM {Reservation._meta.db_table} WHERE created_at >= %s"
    assert stack.postgres.rows(held, load.started_at) == []


def test_postgresql_stopped_and_started_again_under_load(stack, browsers, upstream):
    load = load_start(stack, browsers, upstream)

    stack.postgres.stop()
    try:
        answers = outage_answers(
            upstream,
            *[lambda site=site: healthz(site) for site in stack.sites],
            *[lambda client=client: client.get("/") for client in browsers],
            *[lambda client=client: chat_send(client, "Hello?", **HTMX) for client in browsers],
            *[lambda site=site: api_call_error(stack, site) for site in stack.sites],
        )
    finally:
        stack.postgres.start()

    health, pages, sends, api_errors = answers[0:2], answers[2:4], answers[4:6], answers[6:8]
    for status, body in health:
        assert (status, body) == (503, {"status": "error", "database": "error: OperationalError", "redis": "ok"})
    for page in pages:
        assert page.status_code == 503
        assert DATABASE_DOWN in page.text
    for send in sends:
        assert send.status_code == 503
        assert send.headers["HX-Retarget"] == "#composer-errors"
        assert DATABASE_DOWN in send.text
    for error in api_errors:
        assert isinstance(error, openai.InternalServerError)
        assert (error.status_code, error.code) == (503, "service_unavailable")
        assert error.response.headers["Retry-After"] == "5"
        assert error.body["message"].startswith(DATABASE_DOWN)
    assert len(upstream.requests) == 4  # nothing new reached the upstream during the outage
    assert_site_recovers(stack, browsers, load)


def test_redis_stopped_and_started_again_under_load(stack, browsers, upstream):
    load = load_start(stack, browsers, upstream)

    stack.redis.stop()
    try:
        answers = outage_answers(
            upstream,
            *[lambda site=site: healthz(site) for site in stack.sites],
            *[lambda client=client: chat_send(client, "Hello?", **HTMX) for client in browsers],
            *[lambda client=client: chat_send(client, "Hello?") for client in browsers],
            *[lambda site=site: api_call_error(stack, site) for site in stack.sites],
        )
    finally:
        stack.redis.start()

    health, htmx_sends, form_sends, api_errors = answers[0:2], answers[2:4], answers[4:6], answers[6:8]
    for status, body in health:
        assert (status, body) == (503, {"status": "error", "database": "ok", "redis": "error: ConnectionError"})
    for send in htmx_sends:
        assert send.status_code == 503
        assert send.headers["HX-Retarget"] == "#composer-errors"
        assert REDIS_DOWN in send.text
    for send in form_sends:
        assert send.status_code == 503
        assert REDIS_DOWN in send.text
    for error in api_errors:
        assert isinstance(error, openai.InternalServerError)
        assert (error.status_code, error.code) == (503, "service_unavailable")
        assert error.body["message"].startswith(REDIS_DOWN)
    assert len(upstream.requests) == 4
    assert_site_recovers(stack, browsers, load)
