"""Streaming benchmarks of the site on loopback, against the fake OpenAI-compatible upstream.

    .venv/bin/python bench/stream_bench.py             # all phases, Redis and in-memory layers
    .venv/bin/python bench/stream_bench.py --quick     # small counts: a smoke run of the bench itself
    .venv/bin/python bench/stream_bench.py --profile   # also py-spy the site (one message at a time, paced load)

The figures of issue 7's budget (DESIGN.md, "Performance budget"), on both paths, the
browser's (web: POST the message, GET its SSE stream) and the apps' (/v1 chat completions):

- ttft: time to first token the site adds to the upstream's, side by side with direct
  calls to the fake in the same run, and the site's CPU per short call or message;
- warm: the same short calls and messages back to back, the upstream answering at once, so
  that the site's CPU is measured while the machine is busy: this machine's cores run the
  same work about twice as slowly after 100 ms idle (the figure is in the results);
- paced: daphne's CPU per relayed upstream chunk with 200 paced streams at once;
- burst: 200 senders at once with replies of about 4 s: does every one see its reply live;
- memory: 2,000 open streams (web: a reply generating slowly plus its SSE watcher; /v1: an
  open streamed call): RSS, threads and PostgreSQL connections per stream, and after they close.

The site runs as one daphne process against PostgreSQL, once with the Redis pub/sub
channel layer (production: REDIS_URL set) and once with the in-memory one (embedded
default). Throwaway PostgreSQL and Redis are started like scripts/test.sh does, unless
DATABASE_URL / REDIS_URL are given. The load generator is this process (asyncio,
httpx for the TTFT probes, aiohttp for the loads); the fake upstream and the site are
child processes. Everything is bounded in count and time and is cleaned up at the end.
bench/README.md says what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import deployed_env, free_port, wait_for_http  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = REPO / "bench" / "results"
# Where the site's code is run from: the work tree, or a snapshot of a commit (--revision).
SOURCE = REPO
# Where the paced phase's second site runs from, beside the first (--paired): None for none.
PAIRED_SOURCE: Path | None = None
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench"
STREAM_URL = re.compile(r'data-stream-url="([^"]+)"')
LAYERS = ("redis", "memory")
PHASES = ("ttft", "warm", "paced", "burst", "memory")
PATHS = ("web", "v1")

# Issue 7's budget, per path where it differs.
BUDGET = {
    "added_ttft_p50_ms": {"v1": 5.0, "web": 10.0},
    "cpu_ms_per_call": {"v1": 4.0, "web": 8.0},
    "cpu_us_per_chunk": 50.0,
    "kb_per_stream": 64.0,
    "streams": 2000,
    "held_per_stream": "no PostgreSQL connection, no thread",
    "burst": "every one of 200 senders sees its reply live",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- Processes and what /proc says about them ---------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all its threads, live and exited)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in kB, and the number of threads."""
    wanted = {"VmRSS", "VmHWM", "Threads"}
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in wanted:
                out[key] = int(value.split()[0])
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _process_table() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds, command name) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, name)
    return table


# Processes of this bench that are not our children (PostgreSQL daemonizes): their pids.
OUR_ROOTS: set[int] = set()


class OthersMeter:
    """CPU used by processes that are not this bench's (nor its servers') between start and stop."""

    def __init__(self):
        self.before = _process_table()
        self.started = time.monotonic()

    def stop(self) -> tuple[float, list[str]]:
        after = _process_table()
        seconds = max(time.monotonic() - self.started, 1e-3)
        ours = {os.getpid(), *OUR_ROOTS}
        grew = True
        while grew:  # everything descended from us or from our daemons
            grew = False
            for pid, (parent, _, _) in after.items():
                if parent in ours and pid not in ours:
                    ours.add(pid)
                    grew = True
        others = Counter()
        for pid, (_, cpu, name) in after.items():
            if pid not in ours:
                others[name] += cpu - (self.before[pid][1] if pid in self.before else 0)
        busy = sum(others.values()) / seconds
        return busy, [f"{name} {cpu / seconds:.2f}" for name, cpu in others.most_common(3) if cpu > 0]


def machine_busy(seconds: float = 1.0) -> tuple[float, list[str]]:
    """Cores busy over `seconds` in processes that are not this bench's, and the busiest of them."""
    meter = OthersMeter()
    time.sleep(seconds)
    return meter.stop()


def others_during(meter: OthersMeter) -> dict:
    busy, top = meter.stop()
    return {"others_busy_cores_during": round(busy, 2), "others_top_during": top}


def quiet_machine(wait_limit: float, threshold: float = 0.2) -> dict:
    """Wait (bounded) until other work on the machine is quiet; return what the load was."""
    deadline = time.monotonic() + wait_limit
    while True:
        busy, top = machine_busy(2.0)
        if busy <= threshold or time.monotonic() >= deadline:
            break
        log(f"others use {busy:.2f} cores ({', '.join(top)}); waiting for them to calm down")
        time.sleep(3)
    load = os.getloadavg()
    return {"others_busy_cores": round(busy, 2), "others_top": top, "loadavg": [round(x, 2) for x in load]}


def stop_process(process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.05)


# -- Throwaway PostgreSQL and Redis, as scripts/test.sh starts them -----------------------


class Postgres:
    def __init__(self, scratch: Path, max_connections: int):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
        self.bin = bins[-1] if bins else Path(shutil.which("initdb") or "initdb").parent
        self.dir = scratch / "postgres"
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "socket"
        self.port = free_port()
        self.max_connections = max_connections
        self.as_pg: list[str] = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        self.started = False

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_pg, *args], check=True, capture_output=True, text=True, **kwargs)

    def start(self) -> str:
        if self.as_pg and subprocess.run(["id", "postgres"], capture_output=True).returncode:
            home = ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
            subprocess.run(["useradd", "--system", "--user-group", *home, "postgres"], check=True)
        self.dir.mkdir(parents=True)
        if self.as_pg:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("mkdir", "-m", "700", str(self.socket_dir))
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        config = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.socket_dir}'\nmax_connections = {self.max_connections}\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
        self._run("tee", "-a", str(self.data / "postgresql.conf"), input=config)
        self.started = True
        pg_ctl = str(self.bin / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start")
        OUR_ROOTS.add(int((self.data / "postmaster.pid").read_text().split()[0]))
        password = secrets.token_hex(16)
        self._run(
            str(self.bin / "psql"),
            "-q",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f"CREATE ROLE chatsite LOGIN CREATEDB PASSWORD '{password}'",
            "-c",
            "CREATE DATABASE chatsite OWNER chatsite",
        )
        return f"postgres://chatsite:{password}@127.0.0.1:{self.port}/chatsite"

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                [*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
            self.started = False


class Redis:
    def __init__(self, scratch: Path):
        self.dir = scratch / "redis"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        self.dir.mkdir()
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "log")]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_for_port(self.port, 10, self.process)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@contextlib.contextmanager
def fake_upstream(scratch: Path, *, chunks: int, interval: float, first_delay: float = 0.0) -> Iterator[str]:
    """tests/fake_upstream.py on its own, from its command line; yields its base URL."""
    port = free_port()
    log_path = scratch / f"fake-{port}.log"
    command = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--chunks", str(chunks)]
    command += ["--interval", str(interval), "--first-delay", str(first_delay)]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, cwd=SOURCE, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 20, process)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_process(process, sig=signal.SIGINT)


@dataclass
class Site:
    url: str
    pid: int
    log: Path


@contextlib.contextmanager
def site_server(scratch: Path, env: dict[str, str], name: str, source: Path | None = None) -> Iterator[Site]:
    """The site as one daphne process, like tests/servers.py starts it (plain daphne for a revision before
    chatsite/serve.py, which runs it on uvloop), from SOURCE unless `source` is given."""
    source = source or SOURCE
    port = free_port()
    log_path = scratch / f"site-{name}-{port}.log"
    server = ["-m", "chatsite.serve"] if (source / "chatsite" / "serve.py").exists() else ["-m", "daphne"]
    command = [str(BIN / "python"), *server, "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            command, cwd=source, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", 60, process=process)
        yield Site(url=url, pid=process.pid, log=log_path)
    except BaseException:
        sys.stderr.write(f"--- tail of {log_path}\n{log_path.read_text(errors='replace')[-5000:]}\n")
        raise
    finally:
        stop_process(process)
        errors = [line for line in log_path.read_text(errors="replace").splitlines() if "Traceback" in line]
        if errors:
            RESULTS.mkdir(parents=True, exist_ok=True)
            kept = RESULTS / f"{log_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            shutil.copy(log_path, kept)
            log(f"the site logged {len(errors)} tracebacks: see {kept}")


# -- Users, chats and sessions, written straight to the database --------------------------


@dataclass
class BenchUser:
    username: str
    session: str
    csrf: str
    conversations: list[int]
    api_key: str = ""

    def api_headers(self) -> dict[str, str]:
        """What an app sends to /v1: its site key."""
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "text/event-stream"}

    def headers(self, site: str) -> dict[str, str]:
        """What a logged-in browser sends with an htmx POST: cookies, the CSRF header, its Origin."""
        return {
            "Cookie": f"sessionid={self.session}; csrftoken={self.csrf}",
            "X-CSRFToken": self.csrf,
            "Origin": site,
        }


def django_setup(env: dict[str, str]) -> None:
    os.environ.update({k: v for k, v in env.items() if k != "REDIS_URL"})
    os.environ.pop("REDIS_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    import django

    django.setup()


def users_create(prefix: str, count: int, *, conversations_each: int = 1) -> list[BenchUser]:
    """Users with a logged-in session, `conversations_each` empty chats and a site API key each, in bulk."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.db import connection, transaction
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from accounts.models import API_KEY_SHOWN, ApiKey, User, api_key_hash
    from conversations.models import ChatModel, Conversation

    model = ChatModel.objects.get(model_id=MODEL)
    store = SessionStore()
    expire = timezone.now() + timezone.timedelta(days=1)
    with transaction.atomic():
        users = User.objects.bulk_create(
            [User(username=f"{prefix}-{i}", password="!bench-no-password") for i in range(count)]
        )
        chats = Conversation.objects.bulk_create(
            [Conversation(user=u, model=model, title=f"bench {j}") for u in users for j in range(conversations_each)]
        )
        sessions = []
        out = []
        for i, user in enumerate(users):
            key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
            data = {
                SESSION_KEY: str(user.pk),
                BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: user.get_session_auth_hash(),
            }
            sessions.append(Session(session_key=key, session_data=store.encode(data), expire_date=expire))
            mine = [chat.pk for chat in chats[i * conversations_each : (i + 1) * conversations_each]]
            out.append(BenchUser(user.username, key, get_random_string(32), mine, ApiKey.new_secret()))
        Session.objects.bulk_create(sessions)
        ApiKey.objects.bulk_create(
            [
                ApiKey(user=u, name="bench", prefix=b.api_key[:API_KEY_SHOWN], key_hash=api_key_hash(b.api_key))
                for u, b in zip(users, out, strict=True)
            ]
        )
    connection.close()
    return out


def password_user_create(username: str, password: str, conversations: int) -> tuple[list[int], str]:
    """A user who logs in with a password, with empty chats; returns their ids and a site API key."""
    from django.db import connection

    from accounts.models import User
    from accounts.services import api_key_create
    from conversations.models import ChatModel, Conversation

    user = User.objects.create_user(username=username, password=password)
    model = ChatModel.objects.get(model_id=MODEL)
    ids = [Conversation.objects.create(user=user, model=model, title=f"bench {j}").pk for j in range(conversations)]
    _, api_key = api_key_create(user=user, name="bench")
    connection.close()
    return ids, api_key


# -- SSE watching (aiohttp) ---------------------------------------------------------------


@dataclass
class Watch:
    """One message and its reply stream (web), or one streamed /v1 call, as the load generator saw it.

    Times are monotonic seconds. `chunks` counts the upstream's content chunks
    received so far (web: from the SSE offset, since the fake's text is known
    chunk by chunk); `first_frame_chunks` how many the first frame brought at once.
    """

    sent: float = 0.0
    posted: float | None = None
    post_status: int = 0
    path: str = ""
    attached: float | None = None
    first_delta: float | None = None
    done: float | None = None
    frames: int = 0
    offset: int = 0
    chunks: int = 0
    first_frame_chunks: int = 0
    status: str = ""
    error: str = ""


async def message_send(http: aiohttp.ClientSession, site: str, user: BenchUser, watch: Watch, text: str) -> bool:
    """POST a message the way htmx does; remember the reply's stream URL from the fragment."""
    watch.sent = time.monotonic()
    try:
        async with http.post(
            f"{site}/c/{user.conversations[0]}/messages/",
            data={"text": text},
            headers={**user.headers(site), "HX-Request": "true"},
        ) as response:
            watch.post_status = response.status
            body = await response.text()
    except (aiohttp.ClientError, TimeoutError) as error:
        watch.error = f"POST {error.__class__.__name__}"
        return False
    watch.posted = time.monotonic()
    match = STREAM_URL.search(body)
    if response.status != 200 or not match:
        watch.error = f"POST answered {response.status} without a stream URL"
        return False
    watch.path = match.group(1)
    return True


async def reply_watch(
    http: aiohttp.ClientSession,
    site: str,
    user: BenchUser,
    watch: Watch,
    on_attached: Callable[[], None],
    on_delta: Callable[[Watch], None] | None = None,
    cumulative: list[int] | None = None,
) -> None:
    """GET the SSE stream and read it to `event: done`, counting delta frames.

    `cumulative` (the reply's length after each of the fake's chunks) turns offsets into chunks.
    """
    attached = Attached(on_attached)
    try:
        async with http.get(
            site + watch.path, headers={**user.headers(site), "Accept": "text/event-stream"}
        ) as response:
            if response.status != 200:
                watch.error = f"stream answered {response.status}"
                return
            await reply_events_read(response, watch, attached, on_delta, cumulative)
    except (aiohttp.ClientError, TimeoutError) as error:
        watch.error = f"stream {error.__class__.__name__}"
    finally:
        attached.noted()  # a failed watcher must not hold up the others


async def message_send_streamed(
    http: aiohttp.ClientSession,
    site: str,
    user: BenchUser,
    watch: Watch,
    text: str,
    on_attached: Callable[[], None],
    on_delta: Callable[[Watch], None] | None = None,
    cumulative: list[int] | None = None,
) -> None:
    """POST a message as chat.js does in an open chat: its answer is the turn, then the reply's events."""
    watch.sent = time.monotonic()
    attached = Attached(on_attached)
    try:
        async with http.post(
            f"{site}/c/{user.conversations[0]}/messages/",
            data={"text": text},
            headers={**user.headers(site), "HX-Request": "true", "Accept": "text/event-stream"},
        ) as response:
            watch.post_status = response.status
            if response.status != 200 or response.content_type != "text/event-stream":
                watch.error = f"POST answered {response.status} {response.content_type}"
                return
            watch.posted = time.monotonic()
            await reply_events_read(response, watch, attached, on_delta, cumulative)
    except (aiohttp.ClientError, TimeoutError) as error:
        watch.error = f"POST {error.__class__.__name__}"
    finally:
        attached.noted()


class Attached:
    """Tells `on_attached` once: when the reply's stream opens (its `retry:` line), or when it failed."""

    def __init__(self, on_attached: Callable[[], None]):
        self.on_attached = on_attached
        self.done = False

    def noted(self) -> bool:
        if self.done:
            return False
        self.done = True
        self.on_attached()
        return True


async def reply_events_read(
    response: aiohttp.ClientResponse,
    watch: Watch,
    attached: Attached,
    on_delta: Callable[[Watch], None] | None,
    cumulative: list[int] | None,
) -> None:
    """A reply's events read to `event: done`, counting delta frames; the turn before them, if any, skipped."""
    event = ""
    data = ""
    event_id = ""
    async for raw in response.content:
        line = raw.rstrip(b"\r\n")
        if line:
            name, _, value = line.decode().partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data = value
            elif name == "id":
                event_id = value
            elif name == "retry" and attached.noted():
                watch.attached = time.monotonic()
            continue
        if event == "delta":
            watch.frames += 1
            watch.offset = int(event_id)
            if cumulative:
                watch.chunks = bisect.bisect_right(cumulative, watch.offset)
            if watch.first_delta is None:
                watch.first_delta = time.monotonic()
                watch.first_frame_chunks = watch.chunks
            if on_delta:
                on_delta(watch)
        elif event == "done":
            watch.status = json.loads(data)["status"]
            watch.done = time.monotonic()
        event = data = event_id = ""
    if watch.done is None:
        watch.error = "stream ended without event: done"


async def api_stream(
    http: aiohttp.ClientSession,
    site: str,
    user: BenchUser,
    watch: Watch,
    on_attached: Callable[[], None],
    on_chunk: Callable[[Watch], None] | None = None,
) -> None:
    """A streamed /v1 chat completion, as an app makes it, read to `data: [DONE]`, counting content chunks.

    It counts as attached at its first content chunk: the call is then open end to end.
    """
    watch.sent = time.monotonic()
    attached_noted = False
    try:
        async with http.post(f"{site}/v1/chat/completions", json=_upstream_body(), headers=user.api_headers()) as r:
            watch.post_status = r.status
            if r.status != 200:
                watch.error = f"/v1 answered {r.status}"
                return
            async for raw in r.content:
                if not raw.startswith(b"data:"):
                    continue
                data = raw[5:].strip()
                if data == b"[DONE]":
                    watch.status = "complete"
                    watch.done = time.monotonic()
                    break
                chunk = json.loads(data)
                if not (chunk.get("choices") and chunk["choices"][0]["delta"].get("content")):
                    continue
                watch.chunks += 1
                watch.frames += 1
                if watch.first_delta is None:
                    watch.first_delta = watch.attached = time.monotonic()
                    watch.first_frame_chunks = 1
                    attached_noted = True
                    on_attached()
                if on_chunk:
                    on_chunk(watch)
            if watch.done is None:
                watch.error = "stream ended without data: [DONE]"
    except (aiohttp.ClientError, TimeoutError) as error:
        watch.error = f"stream {error.__class__.__name__}"
    finally:
        if not attached_noted:
            on_attached()


def http_session(read_timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout),
    )


async def reference_reply(fake_url: str) -> list[str]:
    """The content chunks of one reply straight from the fake: what every stream must deliver."""
    pieces = []
    async with (
        httpx.AsyncClient(trust_env=False, timeout=60) as client,
        client.stream("POST", f"{fake_url}/chat/completions", json=_upstream_body(), headers=upstream_headers()) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data:") and line != "data: [DONE]":
                chunk = json.loads(line[5:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    pieces.append(chunk["choices"][0]["delta"]["content"])
    return pieces


def _upstream_body() -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 4096,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def upstream_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", "Accept": "text/event-stream"}


# -- Phase 1: time to first token ---------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def spread(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values_ms, 0.50), 2),
        "p95": round(percentile(values_ms, 0.95), 2),
        "min": round(min(values_ms), 2) if values_ms else math.nan,
        "max": round(max(values_ms), 2) if values_ms else math.nan,
    }


async def ttft_stream(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> float:
    """Seconds from a streamed chat completion's POST until its first content delta line; read to the end."""
    started = time.perf_counter()
    first = None
    async with client.stream("POST", url, json=_upstream_body(), headers=headers) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("data:") and line != "data: [DONE]":
                chunk = json.loads(line[5:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url} sent no content")
    return first


async def ttft_site_streamed(
    client: httpx.AsyncClient, site: str, csrf: str, conversation: int, n: int
) -> tuple[float, float, bool]:
    """Seconds from the message POST until the first `event: delta` of its answer, and until its `event: turn`.

    As chat.js sends a message: one request, answered with the turn and then the reply's events.
    """
    started = time.perf_counter()
    first = turn = None
    done = False
    async with client.stream(
        "POST",
        f"/c/{conversation}/messages/",
        data={"text": f"Sample {n}: say hello."},
        headers={"HX-Request": "true", "X-CSRFToken": csrf, "Origin": site, "Accept": "text/event-stream"},
    ) as response:
        if response.status_code != 200 or not response.headers["content-type"].startswith("text/event-stream"):
            raise RuntimeError(f"message POST answered {response.status_code} {response.headers['content-type']}")
        async for line in response.aiter_lines():
            if line == "event: turn":
                turn = time.perf_counter() - started
            elif line == "event: delta" and first is None:
                first = time.perf_counter() - started
            elif line == "event: done":
                done = True
    if not done or first is None or turn is None:
        raise RuntimeError(f"message POST's stream: turn {turn}, first delta {first}, done {done}")
    return first, turn, False


async def ttft_site(
    client: httpx.AsyncClient, site: str, csrf: str, conversation: int, n: int
) -> tuple[float, float, bool]:
    """Seconds from the message POST until the first `event: delta` of its reply, and of the POST alone.

    As a page without chat.js's streamed send (or before it) does: the POST's
    fragment, then a GET of the reply's stream. A reply that ended before the
    stream attached shows up in the browser by chat.js fetching the finished
    message on `event: done`; then that fetch ends the wait, and the third
    value is True.
    """
    started = time.perf_counter()
    response = await client.post(
        f"/c/{conversation}/messages/",
        data={"text": f"Sample {n}: say hello."},
        headers={"HX-Request": "true", "X-CSRFToken": csrf, "Origin": site},
    )
    posted = time.perf_counter() - started
    match = STREAM_URL.search(response.text)
    if response.status_code != 200 or not match:
        raise RuntimeError(f"message POST answered {response.status_code}: {response.text[:300]}")
    first = None
    done = False
    async with client.stream("GET", match.group(1), headers={"Accept": "text/event-stream"}) as stream:
        stream.raise_for_status()
        async for line in stream.aiter_lines():
            if line == "event: delta" and first is None:
                first = time.perf_counter() - started
            elif line == "event: done":
                done = True
    if not done:
        raise RuntimeError("reply stream ended without event: done")
    if first is None:
        message = await client.get(match.group(1).removesuffix("stream/"), headers={"HX-Request": "true"})
        message.raise_for_status()
        return time.perf_counter() - started, posted, True
    return first, posted, False


async def browser_login(client: httpx.AsyncClient, site: str, username: str, password: str) -> str:
    """Log in through the real form, as a browser does; returns the CSRF token."""
    page = await client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    login = await client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Origin": site},
    )
    if login.status_code != 302 or "sessionid" not in client.cookies:
        raise RuntimeError(f"login failed: HTTP {login.status_code}")
    return client.cookies["csrftoken"]


@dataclass
class TtftUser:
    username: str
    password: str
    conversations: list[int]
    api_key: str


async def ttft_run(site: Site, fake_url: str, user: TtftUser, path: str, args, profile_to: Path | None = None) -> dict:
    """Sequential samples on one path, each a pair: a direct call to the fake, then the same through the site.

    The site's CPU over the measured samples, divided by their number, is what
    one short call (/v1) or one message (web) costs it when nothing else runs.
    """
    timeout = httpx.Timeout(30)
    direct_url = f"{fake_url}/chat/completions"
    async with (
        httpx.AsyncClient(base_url=site.url, trust_env=False, timeout=timeout) as client,
        httpx.AsyncClient(trust_env=False, timeout=timeout) as fake_client,
    ):
        csrf = await browser_login(client, site.url, user.username, user.password) if path == "web" else ""
        api_headers = {"Authorization": f"Bearer {user.api_key}", "Accept": "text/event-stream"}
        direct, through, posts, late = [], [], [], 0
        cpu_start = 0.0
        spy = None
        total = args.ttft_warmup + args.ttft_samples
        deadline = time.monotonic() + args.phase_timeout
        for n in range(total):
            if time.monotonic() > deadline:
                raise TimeoutError(f"TTFT phase still running after {args.phase_timeout} s ({n} samples)")
            if n == args.ttft_warmup:
                cpu_start = cpu_seconds(site.pid)
                spy = PySpy(site.pid, profile_to, args) if profile_to else None
            d = await ttft_stream(fake_client, direct_url, upstream_headers())
            if path == "web":
                send = ttft_site_streamed if args.web_send == "stream" else ttft_site
                s, p, after_end = await send(client, site.url, csrf, user.conversations[n % len(user.conversations)], n)
            else:
                s, p, after_end = await ttft_stream(client, f"{site.url}/v1/chat/completions", api_headers), 0.0, False
            if n >= args.ttft_warmup:
                late += after_end
                direct.append(d * 1000)
                through.append(s * 1000)
                posts.append(p * 1000)
        cpu_used = cpu_seconds(site.pid) - cpu_start
        if spy:
            await asyncio.get_running_loop().run_in_executor(None, spy.stop)
    added = [s - d for s, d in zip(through, direct, strict=True)]
    await asyncio.sleep(2)
    result = {
        "samples": len(direct),
        # Everything the site does for one short call or message, sequentially: (POST, SSE
        # attach,) a short reply relayed (--ttft-chunks), the final writes and settling.
        "site_cpu_ms_per_call": round(cpu_used / len(direct) * 1000, 2) if direct else None,
        "direct_ms": spread(direct),
        "site_ms": spread(through),
        "added_ms": spread(added),  # per sample: site minus the direct probe just before it
        "added_p50_of_medians_ms": round(percentile(through, 0.5) - percentile(direct, 0.5), 2),
        "site_after_2s": await Monitor(site.pid, args.database_url).now(),
    }
    if path == "web":
        result["replies_done_before_attach"] = late
        result["post_roundtrip_ms"] = spread(posts)
        result["after_post_to_first_delta_ms"] = spread([s - p for s, p in zip(through, posts, strict=True)])
    return result


# -- Phase 2: CPU per relayed chunk under paced streams -----------------------------------


class Monitor:
    """Samples the site's threads, RSS, open files and PostgreSQL backends while a load runs.

    Without a database URL (floor_bench.py's relay has none) it leaves the backends out.
    """

    def __init__(self, pid: int, database_url: str):
        self.pid = pid
        self.database_url = database_url
        self.peak: Counter = Counter()
        self.samples = 0

    @contextlib.asynccontextmanager
    async def _database(self):
        import psycopg

        if not self.database_url:
            yield None
            return
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as connection:
            yield connection

    async def backends(self, connection) -> dict[str, int]:
        if connection is None:
            return {}
        cursor = await connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {"pg_backends": (await cursor.fetchone())[0]}

    async def run(self, interval: float = 0.5) -> None:
        async with self._database() as connection:
            while True:
                status = proc_status(self.pid)
                now = {
                    "threads": status["Threads"],
                    "rss_kb": status["VmRSS"],
                    "open_fds": open_fds(self.pid),
                    **await self.backends(connection),
                }
                for key, value in now.items():
                    self.peak[key] = max(self.peak[key], value)
                self.samples += 1
                await asyncio.sleep(interval)

    async def now(self) -> dict[str, int]:
        async with self._database() as connection:
            backends = await self.backends(connection)
        status = proc_status(self.pid)
        return {"threads": status["Threads"], "rss_kb": status["VmRSS"], **backends}


class PySpy:
    """py-spy recording the site (raw collapsed stacks) over a window of a load."""

    def __init__(self, pid: int, output: Path, args: argparse.Namespace):
        self.output = output
        command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", str(args.profile_rate)]
        # --nonblocking: never pause daphne; with a thread per open stream (see README), pausing
        # it for every sample slows it down several times over. --gil: only the thread running Python
        # (or C called from it) is sampled. Without it a third of a message's samples were the loop's
        # thread in uvloop's C while perf saw uvloop's code take 2.5% of the CPU (bench/README.md): py-spy
        # took a thread waiting for the GIL, or in epoll, for one at work. Samples still blocked in C are
        # dropped in profile_summary (IDLE_LEAVES).
        command += ["--format", "raw", "--nonblocking", "--nolineno", "--gil", "--output", str(output)]
        self.log = open(output.with_suffix(".log"), "wb")  # closed in stop()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)

    def stop_soon(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def stop(self) -> None:
        stop_process(self.process, sig=signal.SIGINT, timeout=30)
        self.log.close()


@dataclass
class Instant:
    at: float
    cpu: float
    chunks: int
    frames: int


def chunk_ends(pieces: list[str]) -> list[int]:
    """The reply's length after each of the fake's content chunks: turns an SSE offset into chunks."""
    return list(itertools.accumulate(len(piece) for piece in pieces))


async def stream_one(
    http: aiohttp.ClientSession,
    site: str,
    path: str,
    user: BenchUser,
    watch: Watch,
    ends: list[int],
    on_attached: Callable[[], None] = lambda: None,
    on_chunk: Callable[[Watch], None] | None = None,
    *,
    web_send: str,
) -> None:
    """One reply on either path: web sends the message and reads its reply (in the answer, or from its own
    stream after it: --web-send), /v1 streams a call."""
    if path == "v1":
        await api_stream(http, site, user, watch, on_attached, on_chunk)
    elif web_send == "stream":
        await message_send_streamed(http, site, user, watch, "Tell me about foxes.", on_attached, on_chunk, ends)
    elif await message_send(http, site, user, watch, "Tell me about foxes."):
        await reply_watch(http, site, user, watch, on_attached, on_chunk, ends)
    else:
        on_attached()


async def paced_run(
    site: Site, users: list[BenchUser], pieces: list[str], path: str, args, *, profile_to: Path | None
) -> dict:
    """Every user starts a reply at once and reads it; measured until the steady window ends.

    Daphne's CPU is read before the first request and over the steady window:
    from the moment every stream has had its first chunk (every setup is done,
    all streams relay at once) for --paced-window seconds, or until the first
    stream is 95% through. A stream that failed before its first chunk counts as
    set up (it is in `errors`). Then the load stops.
    """
    watches = [Watch() for _ in users]
    ends = chunk_ends(pieces)
    window_end_chunks = int(len(pieces) * 0.95)
    window: dict[str, Instant] = {}
    window_done = asyncio.Event()
    spies: dict[str, PySpy] = {}
    set_up = 0

    def instant() -> Instant:
        return Instant(
            time.monotonic(), cpu_seconds(site.pid), sum(w.chunks for w in watches), sum(w.frames for w in watches)
        )

    def window_close() -> None:
        if "start" in window and "end" not in window:
            window["end"] = instant()
            window_done.set()
            if profile_to:
                spies["relay"].stop_soon()

    def setup_done() -> None:
        nonlocal set_up
        set_up += 1
        if set_up == len(users):
            window["start"] = instant()
            asyncio.get_running_loop().call_later(args.paced_window, window_close)
            if profile_to:
                spies["setup"].stop_soon()
                spies["relay"] = PySpy(site.pid, profile_to.with_name(f"{profile_to.name}-relay.txt"), args)

    def on_chunk(watch: Watch) -> None:
        if watch.frames == 1:
            setup_done()
        if watch.chunks >= window_end_chunks:
            window_close()

    async def one(user: BenchUser, watch: Watch) -> None:
        await stream_one(http, site.url, path, user, watch, ends, on_chunk=on_chunk, web_send=args.web_send)
        if not watch.frames:
            setup_done()

    monitor = Monitor(site.pid, args.database_url)
    monitor_task = asyncio.create_task(monitor.run())
    if profile_to:
        spies["setup"] = PySpy(site.pid, profile_to.with_name(f"{profile_to.name}-setup.txt"), args)
        await asyncio.sleep(0.5)  # let py-spy attach
    async with http_session(read_timeout=60) as http:
        begin = instant()
        tasks = [asyncio.create_task(one(user, watch)) for user, watch in zip(users, watches, strict=True)]
        try:
            async with asyncio.timeout(args.phase_timeout):
                await window_done.wait()
        except TimeoutError:
            log(f"paced load hit the {args.phase_timeout} s limit before its steady window ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    monitor_task.cancel()
    await asyncio.gather(monitor_task, return_exceptions=True)
    for spy in spies.values():
        await asyncio.get_running_loop().run_in_executor(None, spy.stop)
    await asyncio.sleep(2)
    after = await monitor.now()

    errors = Counter(w.error for w in watches if w.error and w.error != "stream CancelledError")
    result = {
        "path": path,
        "streams": len(users),
        "errors": dict(errors),
        "ideal_stream_s": round(args.paced_first_delay + (len(pieces) - 1) * args.paced_interval, 2),
        "site_peak": dict(monitor.peak),
        "site_2s_after_the_load_stopped": after,
    }
    if "start" in window and "end" in window:
        start, stop = window["start"], window["end"]
        chunks, frames, seconds = stop.chunks - start.chunks, stop.frames - start.frames, stop.at - start.at
        result.update(
            {
                "cpu_us_per_chunk_all_in": round((stop.cpu - begin.cpu) / stop.chunks * 1e6, 1),
                "chunks_all_in": stop.chunks,
                "steady": {
                    "setup_wall_s": round(start.at - begin.at, 2),
                    "setup_cpu_ms_per_stream": round((start.cpu - begin.cpu) / len(users) * 1000, 2),
                    "wall_s": round(seconds, 2),
                    "chunks": chunks,
                    "frames": frames,
                    "chunks_per_frame": round(chunks / frames, 2) if frames else None,
                    "chunks_per_s": round(chunks / seconds),
                    "upstream_chunks_per_s": round(len(users) / args.paced_interval),
                    "cpu_s": round(stop.cpu - start.cpu, 3),
                    "cpu_us_per_chunk": round((stop.cpu - start.cpu) / chunks * 1e6, 1) if chunks else None,
                    "site_cpu_busy": round((stop.cpu - start.cpu) / seconds, 2),
                },
            }
        )
    return result


# -- Phase 3: many senders at once, short replies: does everyone see text live? -----------


async def burst_run(site: Site, users: list[BenchUser], pieces: list[str], path: str, args) -> dict:
    """Every user starts a reply of about --burst-chunks x --paced-interval seconds at once and reads it to the end.

    A web user saw the reply live when the stream completed and its first frame
    (the text generated before the watcher attached) held at most half of it;
    old main's send took 10 s under this load, and every reply had ended before
    its watcher attached.
    """
    watches = [Watch() for _ in users]
    ends = chunk_ends(pieces)
    monitor = Monitor(site.pid, args.database_url)
    monitor_task = asyncio.create_task(monitor.run())
    cpu0 = cpu_seconds(site.pid)
    async with http_session(read_timeout=60) as http:
        begin = time.monotonic()
        tasks = [
            stream_one(http, site.url, path, user, watch, ends, web_send=args.web_send)
            for user, watch in zip(users, watches, strict=True)
        ]
        try:
            async with asyncio.timeout(args.phase_timeout):
                await asyncio.gather(*tasks)
        except TimeoutError:
            log(f"burst hit the {args.phase_timeout} s limit")
        wall = time.monotonic() - begin
    cpu = cpu_seconds(site.pid) - cpu0
    monitor_task.cancel()
    await asyncio.gather(monitor_task, return_exceptions=True)

    def ms(values) -> dict:
        return spread([v * 1000 for v in values if v is not None])

    complete = [w for w in watches if not w.error and w.chunks == len(pieces)]
    live = [w for w in complete if w.first_frame_chunks <= len(pieces) / 2]
    result = {
        "path": path,
        "senders": len(users),
        "ideal_stream_s": round((len(pieces) - 1) * args.paced_interval, 2),
        "complete": len(complete),
        "saw_it_live": len(live),
        "errors": dict(Counter(w.error for w in watches if w.error)),
        "first_frame_share_of_reply": spread([w.first_frame_chunks / len(pieces) for w in complete]),
        "first_token_after_send_ms": ms(w.first_delta - w.sent for w in watches if w.first_delta),
        "end_after_send_s": spread([w.done - w.sent for w in watches if w.done]),
        "wall_s": round(wall, 2),
        "site_cpu_s": round(cpu, 2),
        "site_peak": dict(monitor.peak),
    }
    if path == "web":
        result["post_ms"] = ms(w.posted - w.sent for w in watches if w.posted)
        result["attach_after_send_ms"] = ms(w.attached - w.sent for w in watches if w.attached)
    return result


# Streams the warm-up runs at once: fewer than the site's database pool (20), which a
# burst of requests can starve (see README), yet enough for the paced phase's long replies.
WARM_UP_CONCURRENCY = 16


async def warm_up(site: Site, users: list[BenchUser], limit: float, web_send: str) -> int:
    """A few complete replies on both paths, so imports, templates and pools are warm; returns how many completed.

    A few at a time (WARM_UP_CONCURRENCY): the warm-up must not itself be a
    burst, which a site may handle badly (that is what `burst` measures).
    """
    watches = [Watch() for _ in range(2 * len(users))]
    at_once = asyncio.Semaphore(WARM_UP_CONCURRENCY)

    async def one(path: str, user: BenchUser, watch: Watch) -> None:
        async with at_once:
            await stream_one(http, site.url, path, user, watch, [], web_send=web_send)

    async with http_session(read_timeout=60) as http, asyncio.timeout(limit):
        await asyncio.gather(
            *(one("web", u, w) for u, w in zip(users, watches, strict=False)),
            *(one("v1", u, w) for u, w in zip(users, watches[len(users) :], strict=True)),
        )
    return sum(1 for w in watches if w.status == "complete")


# -- Phase 4: memory, threads and PostgreSQL connections per open stream -----------------


def settled_rss(pid: int, seconds: float) -> int:
    """RSS in kB once it stops moving: the median of samples over the last second of `seconds`."""
    time.sleep(max(seconds - 1, 0))
    samples = []
    for _ in range(5):
        samples.append(proc_status(pid)["VmRSS"])
        time.sleep(0.2)
    return sorted(samples)[2]


# Seconds the memory phase waits for stopped replies and closed calls to be settled.
CLOSE_WAIT = 120


def calls_open(usernames: list[str]) -> int:
    """Replies still live and reservations still held for these users, as the database says."""
    from django.db import connection

    from accounts.models import Reservation
    from conversations.models import Message

    live = Message.objects.filter(status__in=Message.LIVE_STATUSES, conversation__user__username__in=usernames)
    count = live.count() + Reservation.objects.filter(user__username__in=usernames).count()
    connection.close()
    return count


async def memory_run(site: Site, warm: list[BenchUser], users: list[BenchUser], path: str, args) -> dict:
    """Open N streams on one path in steps, and read RSS, threads and PostgreSQL connections after each.

    Web: N messages sent (`generating`: replies generating), then N SSE
    watchers attached (`open`), then the watchers leave and every reply is
    stopped (`closed`). /v1: N streamed calls opened (`open`), then the apps
    disconnect (`closed`). The warm-up streams (20 on both paths, the web ones
    kept open, the /v1 ones closed) come before the baseline. A step gives up
    starting streams after --memory-max-errors failures (a site that refuses
    them would otherwise take minutes of 503s to say so).
    """
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.memory_setup_concurrency)
    tasks: dict[str, list[asyncio.Task]] = {"warm": [], "open": []}
    result: dict = {"path": path}
    usernames = [u.username for u in users]
    monitor = Monitor(site.pid, args.database_url)

    async def snapshot(step: str) -> int:
        rss = await loop.run_in_executor(None, settled_rss, site.pid, args.memory_settle)
        result[step] = {**await monitor.now(), "rss_kb": rss, "open_fds": open_fds(site.pid)}
        return rss

    async with http_session(read_timeout=600) as http:

        async def open_all(group: list[BenchUser], watches: list[Watch], step: str, kind: str) -> None:
            """For each user: send a message, watch its reply or open a /v1 call (`step`), a few at a time.

            Each watcher or call is kept open in `tasks[kind]`; the step is done when all are attached.
            """
            failed = 0

            async def one(user: BenchUser, w: Watch) -> None:
                nonlocal failed
                attached = asyncio.Event()
                async with limit:
                    if failed >= args.memory_max_errors:
                        w.error = "not started: too many failures before it"
                        return
                    if step == "send":
                        failed += not await message_send(http, site.url, user, w, "Tell me a long story.")
                        return
                    if step == "call":
                        stream = api_stream(http, site.url, user, w, attached.set)
                    elif w.path:
                        stream = reply_watch(http, site.url, user, w, attached.set)
                    else:
                        return  # its message was refused: counted in errors
                    tasks[kind].append(asyncio.create_task(stream))
                    await attached.wait()
                    failed += bool(w.error)

            await asyncio.gather(*(one(u, w) for u, w in zip(group, watches, strict=True)))

        async def close_all(kind: str) -> None:
            for task in tasks[kind]:
                task.cancel()
            await asyncio.gather(*tasks[kind], return_exceptions=True)
            tasks[kind].clear()

        async def stop_reply(user: BenchUser, w: Watch) -> None:
            async with limit:
                stop_url = site.url + w.path.removesuffix("stream/") + "stop/"
                async with http.post(stop_url, headers={**user.headers(site.url), "HX-Request": "true"}) as r:
                    if r.status != 204:
                        w.error = f"stop answered {r.status}"

        async def until_closed() -> None:
            """Wait until no reply of these users is live and no call of theirs holds a reservation."""
            t0 = time.monotonic()
            for _ in range(CLOSE_WAIT):
                still = await loop.run_in_executor(None, calls_open, usernames)
                if not still:
                    break
                await asyncio.sleep(1)
            result["wall_s_close"] = round(time.monotonic() - t0, 1)
            result["still_open_after_close"] = still

        watches = [Watch() for _ in users]
        monitor_task = asyncio.create_task(monitor.run())
        try:
            async with asyncio.timeout(args.memory_timeout):
                warm_watches = [Watch() for _ in warm]
                await open_all(warm, warm_watches, "send", "warm")
                await open_all(warm, warm_watches, "watch", "warm")
                await open_all(warm, [Watch() for _ in warm], "call", "open")
                await close_all("open")
                base = await snapshot("baseline")
                cpu0 = cpu_seconds(site.pid)

                t0 = time.monotonic()
                if path == "web":
                    await open_all(users, watches, "send", "open")
                    result["wall_s_send"] = round(time.monotonic() - t0, 1)
                    generating = await snapshot("generating")
                    sent = result["messages_sent"] = sum(1 for w in watches if w.path)
                    result["kb_per_reply_generating"] = round((generating - base) / max(sent, 1), 1)
                    t0 = time.monotonic()
                    await open_all(users, watches, "watch", "open")
                else:
                    await open_all(users, watches, "call", "open")
                result["wall_s_open"] = round(time.monotonic() - t0, 1)
                opened = await snapshot("open")
                streams = result["streams_open"] = sum(1 for t in tasks["open"] if not t.done())
                result["kb_per_stream"] = round((opened - base) / max(streams, 1), 1)
                if path == "web":
                    result["kb_per_watcher"] = round((opened - generating) / max(streams, 1), 1)
                result["cpu_ms_per_stream_opened"] = round((cpu_seconds(site.pid) - cpu0) / max(streams, 1) * 1000, 1)

                await close_all("open")
                if path == "web":
                    await asyncio.gather(*(stop_reply(u, w) for u, w in zip(users, watches, strict=True) if w.path))
                await until_closed()
                closed = await snapshot("closed")
                result["kb_left_per_stream_after_close"] = round((closed - base) / max(streams, 1), 1)
        except TimeoutError:
            log(f"memory phase hit the {args.memory_timeout} s limit; keeping what was measured")
            result["error"] = f"timed out after {args.memory_timeout} s"
        finally:
            monitor_task.cancel()
            await asyncio.gather(monitor_task, return_exceptions=True)
            result["streams"] = len(users)
            result["site_peak"] = dict(monitor.peak)
            result["errors"] = dict(Counter(w.error for w in watches if w.error and "CancelledError" not in w.error))
            result["vm_hwm_mb"] = round(proc_status(site.pid)["VmHWM"] / 1024, 1)
            for kind in tasks:
                await close_all(kind)
    return result


# -- Profile summary ----------------------------------------------------------------------


# Where a sampled stack's CPU goes, by the first marker found in it (most specific first).
ACTIVITIES = [
    ("billing: metered call reserve / settle (accounts/billing)", ("accounts/billing/",)),
    ("database: reply texts saved (replies_flush)", ("replies_flush", "ReplyRunner._save_texts")),
    ("database: other, in db_step / sync_to_async threads", ("_worker (concurrent/futures/thread.py)",)),
    ("upstream read + parse (llm.py, openai SDK)", ("ReplyStream.", "openai/", "httpx2/", "httpcore2/", "h11/")),
    # Not any frame of gateway/: its api_middleware is in the stack of every request.
    ("/v1 relay and view (gateway/chat_completions.py)", ("gateway/chat_completions.py",)),
    ("fan-out: frames published (ReplyBroadcast)", ("ReplyBroadcast.",)),
    ("reply runner, other (runner.py)", ("conversations/replies/runner.py",)),
    ("Redis channel layer: publish writes, subscriber reads", ("channels_redis", "redis/")),
    (
        "SSE watcher (watcher.py, fan-out reads)",
        ("conversations/replies/watcher.py", "conversations/replies/fanout.py"),
    ),
    ("Django ASGI handler (request, response send)", ("django/core/handlers/asgi.py",)),
    ("daphne / twisted HTTP write", ("daphne/", "twisted/")),
    ("asyncio socket I/O", ("asyncio/selector_events.py",)),
]
# Frames every stack passes through: left out of the inclusive ranking.
PLUMBING = ("daphne", "daphne/cli.py", "daphne/server.py", "asyncio/base_events.py", "asyncio/events.py")
PLUMBING += ("<frozen runpy>", "chatsite/serve.py")
PLUMBING += ("twisted/internet/asyncioreactor.py", "threading.py", "concurrent/futures/thread.py", "asgiref/sync.py")
# The project's own packages: their frames are also ranked on their own (`ours`).
OURS = ("conversations/", "accounts/", "chatsite/")
# Innermost frames that block in C (epoll, sockets, locks, queues): waiting, not work. py-spy cannot
# always tell when it does not pause the process, so such samples are dropped here.
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py)",
    "Connection.wait (psycopg/connection.py)",
    "Condition.wait (threading.py)",
    "_worker (concurrent/futures/thread.py)",
    "Event.wait (threading.py)",
    "Thread.join (threading.py)",
)
# The innermost Python frame while uvloop's loop works in C (polling, its transports' socket reads, timers,
# and freeing what a callback let go of), holding the GIL (PySpy's --gil).
LOOP_IN_C = "AsyncioSelectorReactor.run (twisted/internet/asyncioreactor.py)"
STACK_ROOTS = ("<module> (daphne)", "_run_module_as_main (<frozen runpy>)", "Thread._bootstrap (threading.py)")


def profile_summary(path: Path, cpu_seconds_spent: float, units: int, unit: str, top: int) -> dict:
    """Top functions by self and inclusive samples from py-spy's raw output, in µs of CPU per unit."""
    self_samples: Counter = Counter()
    inclusive: Counter = Counter()
    ours: Counter = Counter()
    by_package: Counter = Counter()
    by_activity: Counter = Counter()
    total = idle = truncated = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1] in IDLE_LEAVES:
            idle += n
            continue
        total += n
        truncated += n if frames[0] not in STACK_ROOTS else 0
        self_samples[frames[-1]] += n
        by_package[_package(frames[-1])] += n
        for frame in set(frames):
            file = _file_of(frame)
            if not file.endswith(PLUMBING):
                inclusive[frame] += n
            if file.startswith(OURS):
                ours[frame] += n
        if frames[-1] == LOOP_IN_C:
            activity = "event loop, in C (uvloop: polling, socket reads, timers)"
        else:
            activity = next((name for name, markers in ACTIVITIES if any(m in stack for m in markers)), None)
        by_activity[activity or "event loop, other"] += n
    if not total:
        return {"samples": 0}
    per_unit = cpu_seconds_spent / units * 1e6 if units else 0

    def rows(counter: Counter, limit: int = top) -> list[dict]:
        return [
            {"share": round(n / total, 3), f"us_per_{unit}": round(n / total * per_unit, 1), "frame": frame}
            for frame, n in counter.most_common(limit)
        ]

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "truncated_share": round(truncated / total, 3),
        "unit": unit,
        f"cpu_us_per_{unit}": round(per_unit, 1),
        "by_activity": rows(by_activity, len(ACTIVITIES) + 1),
        "self_by_package": rows(by_package),
        "self": rows(self_samples),
        "inclusive": rows(inclusive),
        "ours": rows(ours),
    }


def _file_of(frame: str) -> str:
    """`function (package/module.py)`, as py-spy names frames, -> `package/module.py`."""
    match = re.search(r"\(([^)]*)\)\s*$", frame)
    return match.group(1) if match else frame


def _package(frame: str) -> str:
    """The top-level package or module of a frame."""
    return _file_of(frame).split("/", 1)[0].removesuffix(".py")


# -- Orchestration ------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    scratch: Path
    database_url: str
    redis_url: str
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(40))
    counter: int = 0

    def site_env(self, layer: str, fake_url: str, source: Path | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "OPENAI_BASE_URL": fake_url,
                "OPENAI_API_KEY": API_KEY,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "SECRET_KEY": self.secret_key,
                "DEBUG": "false",
                "VAR_DIR": str(self.scratch / "var"),
                "PYTHONUNBUFFERED": "1",
                # The checks still run on every message and call (their cost is part of the
                # path), but a bench user sends far more than a person or an app would.
                "RATELIMIT_MESSAGES": "1000000/m",
                "RATELIMIT_API": "1000000/m",
                "RATELIMIT_API_IP": "1000000/m",
            }
        )
        env.update(deployed_env(source or SOURCE))  # the allocator of the revision measured, as it is deployed
        env.update(self.args.site_env)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        if layer == "redis":
            env["REDIS_URL"] = self.redis_url
        else:
            env.pop("REDIS_URL", None)
        return env

    def prefix(self, layer: str, phase: str) -> str:
        self.counter += 1
        return f"bench-{layer}-{phase}-{self.counter}"


def pg_connect_ms(database_url: str, samples: int = 50) -> dict[str, float]:
    """What a new PostgreSQL connection costs (TCP, SCRAM auth, backend fork, one query), as each request pays it."""
    import psycopg

    times = []
    for _ in range(samples):
        started = time.perf_counter()
        with psycopg.connect(database_url) as connection:
            connection.execute("SELECT 1").fetchone()
        times.append((time.perf_counter() - started) * 1000)
    return spread(times)


def phase_ttft(run: Run, layer: str, *, profile: bool = False) -> dict:
    """Sequential calls on each path, against one site; profiled, a separate, shorter repetition under py-spy."""
    args = run.args
    if profile:
        args = argparse.Namespace(**{**vars(args), "ttft_samples": min(args.ttft_samples, 100)})
    password = secrets.token_urlsafe(16)
    username = run.prefix(layer, "ttft")
    conversations, api_key = password_user_create(username, password, args.ttft_conversations)
    user = TtftUser(username, password, conversations, api_key)
    out: dict = {}
    with fake_upstream(run.scratch, chunks=args.ttft_chunks, interval=args.ttft_interval) as fake_url:
        with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-ttft") as site:
            for path in args.paths:
                load = quiet_machine(args.wait_idle)
                what = "profiled run" if profile else "measurement"
                counts = f"{args.ttft_warmup} warm-up + {args.ttft_samples} samples"
                log(f"{layer}: TTFT {path} {what}, {counts} (load {load})")
                spied = None
                if profile:
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    spied = RESULTS / f"profile-{layer}-{path}-{time.strftime('%Y%m%d-%H%M%S')}-call.txt"
                meter = OthersMeter()
                result = asyncio.run(ttft_run(site, fake_url, user, path, args, profile_to=spied))
                load.update(others_during(meter))
                if spied:
                    cpu_s = result["site_cpu_ms_per_call"] / 1000 * result["samples"]
                    summary = profile_summary(spied, cpu_s, result["samples"], "call", args.profile_top)
                    result["profile"] = {"call": summary, "files": str(spied)}
                out[path] = {**result, "machine": load}
        out["pg_connect_ms"] = pg_connect_ms(args.database_url)
    return out


def idle_penalty(samples: int = 40) -> dict[str, float]:
    """This machine's CPU time for one fixed piece of Python work done back to back, and after 100 ms idle.

    A sequential call on an idle site pays the second: caches gone cold and
    the core slowed while it waited, not the site's code.
    """

    def work() -> float:
        started = time.thread_time()
        for i in range(40):
            text = json.dumps({"choices": [{"index": 0, "delta": {"content": f"word {i}"}}]})
            json.loads(text)
            [str(x) for x in range(50)]
        return time.thread_time() - started

    def median(pause: float) -> float:
        times = []
        for _ in range(samples):
            if pause:
                time.sleep(pause)
            times.append(work())
        return percentile(times, 0.5) * 1e6

    busy, after_idle = median(0.0), median(0.1)
    return {"busy_us": round(busy), "after_100ms_idle_us": round(after_idle), "ratio": round(after_idle / busy, 2)}


async def warm_run(site: Site, user: TtftUser, path: str, args) -> dict:
    """--warm-calls calls or messages one after another, as soon as the one before has ended."""
    async with httpx.AsyncClient(base_url=site.url, trust_env=False, timeout=httpx.Timeout(30)) as client:
        csrf = await browser_login(client, site.url, user.username, user.password) if path == "web" else ""
        api_headers = {"Authorization": f"Bearer {user.api_key}", "Accept": "text/event-stream"}
        cpu_start = started = 0.0
        for n in range(args.ttft_warmup + args.warm_calls):
            if n == args.ttft_warmup:
                cpu_start, started = cpu_seconds(site.pid), time.perf_counter()
            if path == "web":
                send = ttft_site_streamed if args.web_send == "stream" else ttft_site
                await send(client, site.url, csrf, user.conversations[n % len(user.conversations)], n)
            else:
                await ttft_stream(client, f"{site.url}/v1/chat/completions", api_headers)
        cpu, wall = cpu_seconds(site.pid) - cpu_start, time.perf_counter() - started
    return {
        "calls": args.warm_calls,
        "site_cpu_ms_per_call": round(cpu / args.warm_calls * 1000, 2),
        "wall_ms_per_call": round(wall / args.warm_calls * 1000, 2),
    }


def phase_warm(run: Run, layer: str) -> dict:
    """Short calls and messages back to back on each path, the fake answering whole at once."""
    args = run.args
    password = secrets.token_urlsafe(16)
    username = run.prefix(layer, "warm")
    conversations, api_key = password_user_create(username, password, args.ttft_conversations)
    user = TtftUser(username, password, conversations, api_key)
    out: dict = {"idle_penalty": idle_penalty()}
    with fake_upstream(run.scratch, chunks=args.ttft_chunks, interval=0.0) as fake_url:
        with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-warm") as site:
            for path in args.paths:
                load = quiet_machine(args.wait_idle)
                log(f"{layer}: back to back {path}, {args.ttft_warmup} warm-up + {args.warm_calls} (load {load})")
                meter = OthersMeter()
                result = asyncio.run(warm_run(site, user, path, args))
                load.update(others_during(meter))
                out[path] = {**result, "machine": load}
    return out


@contextlib.contextmanager
def paced_upstream(run: Run) -> Iterator[tuple[str, list[str]]]:
    """The fake upstream of the paced loads, and the reply it sends (checked to be as long as asked)."""
    args = run.args
    fake = {"chunks": args.paced_chunks, "interval": args.paced_interval, "first_delay": args.paced_first_delay}
    with fake_upstream(run.scratch, **fake) as fake_url:
        pieces = asyncio.run(reference_reply(fake_url))
        if len(pieces) != args.paced_chunks:
            raise RuntimeError(f"the fake sent {len(pieces)} content chunks, expected {args.paced_chunks}")
        yield fake_url, pieces


def phase_paced(run: Run, layer: str, *, profile: bool = False) -> dict:
    """200 paced streams at once on each path, a fresh site for each."""
    args = run.args
    if PAIRED_SOURCE is not None and not profile:
        return phase_paced_paired(run, layer)
    out: dict = {}
    with paced_upstream(run) as (fake_url, pieces):
        for path in args.paths:
            warm = users_create(run.prefix(layer, "warm"), args.warmup_streams)
            users = users_create(run.prefix(layer, "paced"), args.paced_streams)
            with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-paced-{path}") as site:
                done = asyncio.run(warm_up(site, warm, args.phase_timeout, args.web_send))
                load = quiet_machine(args.wait_idle)
                what = "profiled run" if profile else "measurement"
                log(
                    f"{layer}: paced {path} {what}, {len(users)} streams x {len(pieces)} chunks"
                    f" (warm-up {done} ok; load {load})"
                )
                spied = None
                if profile:
                    RESULTS.mkdir(parents=True, exist_ok=True)
                    spied = RESULTS / f"profile-{layer}-{path}-{time.strftime('%Y%m%d-%H%M%S')}"
                meter = OthersMeter()
                result = asyncio.run(paced_run(site, users, pieces, path, args, profile_to=spied))
                load.update(others_during(meter))
            result["machine"] = load
            steady = result.get("steady")
            if spied and steady:
                setup_cpu_s = steady["setup_cpu_ms_per_stream"] / 1000 * len(users)
                result["profile"] = {
                    "relay": profile_summary(
                        spied.with_name(f"{spied.name}-relay.txt"), steady["cpu_s"], steady["chunks"], "chunk",
                        args.profile_top,
                    ),
                    "setup": profile_summary(
                        spied.with_name(f"{spied.name}-setup.txt"), setup_cpu_s, len(users), "stream", args.profile_top
                    ),
                    "files": str(spied) + "-{setup,relay}.txt",
                }  # fmt: skip
            out[path] = result
    return out


def phase_paced_paired(run: Run, layer: str) -> dict:
    """The paced load on two sites at once, this one and --paired's, half the streams each, on each path.

    Two revisions measured one after the other differ by the machine's moment
    as much as by their code: on this machine the same code's CPU a chunk moves
    by up to 7 µs from one run to the next, more than most single changes take off.
    Side by side in one run, both sites relay under the same load at the same
    time, from one fake upstream, and whatever the machine does falls on both.
    Their steady windows are each site's own (its streams all set up), and
    start within a second of each other (`setup_wall_s`).
    """
    args = run.args
    out: dict = {}
    sides = {"this": SOURCE, "paired": PAIRED_SOURCE}
    half = args.paced_streams // 2
    with paced_upstream(run) as (fake_url, pieces):
        for path in args.paths:
            with contextlib.ExitStack() as started:
                loads: dict[str, tuple[Site, list[BenchUser]]] = {}
                for side, source in sides.items():
                    warm = users_create(run.prefix(layer, f"warm-{side}"), args.warmup_streams)
                    users = users_create(run.prefix(layer, f"paced-{side}"), half)
                    site = started.enter_context(
                        site_server(
                            run.scratch, run.site_env(layer, fake_url, source), f"{layer}-paced-{path}-{side}", source
                        )
                    )
                    asyncio.run(warm_up(site, warm, args.phase_timeout, args.web_send))
                    loads[side] = (site, users)
                load = quiet_machine(args.wait_idle)
                log(f"{layer}: paced {path}, two sites side by side, {half} streams each (load {load})")
                meter = OthersMeter()
                results = dict(zip(sides, asyncio.run(_paced_side_by_side(loads, pieces, path, args)), strict=True))
                load.update(others_during(meter))
            out[path] = {"machine": load, **results}
            figures = {side: _dig(result, ("steady", "cpu_us_per_chunk")) for side, result in results.items()}
            log(f"{layer}: paced {path}, CPU a chunk, steady: this {figures['this']}, paired {figures['paired']} µs")
    return out


async def _paced_side_by_side(
    loads: dict[str, tuple[Site, list[BenchUser]]], pieces: list[str], path: str, args
) -> list[dict]:
    runs = (paced_run(site, users, pieces, path, args, profile_to=None) for site, users in loads.values())
    return await asyncio.gather(*runs)


def phase_burst(run: Run, layer: str) -> dict:
    """--burst-senders replies of about 4 s started at once on each path, a fresh site for each."""
    args = run.args
    out: dict = {}
    with fake_upstream(run.scratch, chunks=args.burst_chunks, interval=args.paced_interval) as fake_url:
        pieces = asyncio.run(reference_reply(fake_url))
        for path in args.paths:
            warm = users_create(run.prefix(layer, "warm"), args.warmup_streams)
            users = users_create(run.prefix(layer, "burst"), args.burst_senders)
            with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-burst-{path}") as site:
                done = asyncio.run(warm_up(site, warm, args.phase_timeout, args.web_send))
                load = quiet_machine(args.wait_idle)
                counts = f"{len(users)} at once x {len(pieces)} chunks"
                log(f"{layer}: burst {path}, {counts} (warm-up {done} ok; load {load})")
                meter = OthersMeter()
                result = asyncio.run(burst_run(site, users, pieces, path, args))
                load.update(others_during(meter))
            out[path] = {**result, "machine": load}
    return out


def phase_memory(run: Run, layer: str) -> dict:
    """--memory-streams open streams on each path, a fresh site for each (so neither reuses the other's heap)."""
    args = run.args
    out: dict = {}
    with fake_upstream(run.scratch, chunks=args.memory_chunks, interval=args.memory_interval) as fake_url:
        for path in args.paths:
            warm = users_create(run.prefix(layer, "memwarm"), args.warmup_streams)
            users = users_create(run.prefix(layer, "memory"), args.memory_streams)
            with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-memory-{path}") as site:
                load = quiet_machine(args.wait_idle)
                log(f"{layer}: memory {path}, {len(users)} open streams (load {load})")
                meter = OthersMeter()
                result = asyncio.run(memory_run(site, warm, users, path, args))
                load.update(others_during(meter))
            out[path] = {**result, "machine": load}
    return out


# The memory phase's steps, in order.
STEPS = ("baseline", "open", "closed")


def _dig(node, path: tuple[str, ...]):
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _load_of(machine: dict | None) -> str:
    """Other processes' cores during a measurement, and the load average before it."""
    if not machine:
        return "-"
    return f"{machine.get('others_busy_cores_during', '-')} / {machine.get('loadavg', ['-'])[0]}"


def _side_by_side(node: dict) -> str:
    if "paired" not in node:
        return "-"
    return " / ".join(str(_dig(node, (side, "steady", "cpu_us_per_chunk"))) for side in ("this", "paired"))


def summary_table(results: dict) -> str:
    """Every budget figure, per layer and path, with the machine's load while it was measured."""
    budget = results["budget"]
    header = ("figure", "budget")
    columns = [(layer, path) for layer in results["layers"] for path in PATHS]
    rows = [(*header, *(f"{layer} {path}" for layer, path in columns))]

    def p50p95(node: dict) -> str:
        return f"{node['p50']} / {node['p95']}"

    def pair(first: str, second: str, extra: str = "") -> Callable[[dict], str]:
        return lambda node: f"{node.get(first)} / {node.get(second)}" + extra.format(**node)

    backends_threads = pair("pg_backends", "threads")

    def rss_steps(node: dict) -> str:
        return " / ".join(f"{node[step]['rss_kb'] / 1024:.0f}" if step in node else "-" for step in STEPS)

    lines = [
        ("direct TTFT p50 / p95 (ms)", "", ("ttft", "{path}", "direct_ms"), p50p95),
        ("site TTFT p50 / p95 (ms)", "", ("ttft", "{path}", "site_ms"), p50p95),
        ("added TTFT p50 / p95 (ms)", "{added}", ("ttft", "{path}", "added_ms"), p50p95),
        ("CPU per short call / message (ms)", "{cpu_call}", ("ttft", "{path}", "site_cpu_ms_per_call"), str),
        ("  load: others' cores / loadavg", "", ("ttft", "{path}", "machine"), _load_of),
        ("CPU per call / message, back to back (ms)", "", ("warm", "{path}", "site_cpu_ms_per_call"), str),
        ("  this machine: work after 100 ms idle / busy", "", ("warm", "idle_penalty", "ratio"), str),
        ("  load: others' cores / loadavg", "", ("warm", "{path}", "machine"), _load_of),
        ("CPU/chunk, 200 paced, steady (us)", "<= 50", ("paced", "{path}", "steady", "cpu_us_per_chunk"), str),
        ("  side by side: this / --paired (us)", "", ("paced", "{path}"), _side_by_side),
        ("CPU/chunk, all-in (us)", "", ("paced", "{path}", "cpu_us_per_chunk_all_in"), str),
        (
            "steady chunks/s relayed / sent",
            "",
            ("paced", "{path}", "steady"),
            pair("chunks_per_s", "upstream_chunks_per_s"),
        ),
        ("steady daphne CPU (cores)", "", ("paced", "{path}", "steady", "site_cpu_busy"), str),
        ("chunks per frame", "", ("paced", "{path}", "steady", "chunks_per_frame"), str),
        ("setup wall / steady window (s)", "", ("paced", "{path}", "steady"), pair("setup_wall_s", "wall_s")),
        ("paced errors", "0", ("paced", "{path}", "errors"), lambda node: str(sum(node.values()))),
        ("paced peak PG backends / threads", "", ("paced", "{path}", "site_peak"), backends_threads),
        ("  load: others' cores / loadavg", "", ("paced", "{path}", "machine"), _load_of),
        ("burst: live / complete (of)", "all", ("burst", "{path}"), pair("saw_it_live", "complete", " ({senders})")),
        ("burst: POST p50 / p95 (ms)", "", ("burst", "{path}", "post_ms"), p50p95),
        ("burst: first token p50 / p95 (ms)", "", ("burst", "{path}", "first_token_after_send_ms"), p50p95),
        ("burst: reply ends, p50 / max (s)", "", ("burst", "{path}", "end_after_send_s"), pair("p50", "max")),
        ("burst: ideal reply (s)", "", ("burst", "{path}", "ideal_stream_s"), str),
        ("  load: others' cores / loadavg", "", ("burst", "{path}", "machine"), _load_of),
        ("KB per open stream", "<= 64", ("memory", "{path}", "kb_per_stream"), str),
        ("KB per stream left after close", "0", ("memory", "{path}", "kb_left_per_stream_after_close"), str),
        ("streams open at once", "2000", ("memory", "{path}", "streams_open"), str),
        ("PG backends / threads: baseline", "", ("memory", "{path}", "baseline"), backends_threads),
        ("PG backends / threads: all open", "no more", ("memory", "{path}", "open"), backends_threads),
        ("PG backends / threads: closed", "", ("memory", "{path}", "closed"), backends_threads),
        ("RSS baseline / open / closed (MB)", "", ("memory", "{path}"), rss_steps),
        ("memory errors", "0", ("memory", "{path}", "errors"), lambda node: str(sum(node.values()))),
        ("  load: others' cores / loadavg", "", ("memory", "{path}", "machine"), _load_of),
    ]
    for label, budget_cell, template, fmt in lines:
        cells = []
        for layer, path in columns:
            node = _dig(results["layers"][layer], tuple(key.format(path=path) for key in template))
            cells.append("-" if node is None else fmt(node))
        budget_text = budget_cell.format(
            added=f"v1 <= {budget['added_ttft_p50_ms']['v1']:g}, web <= {budget['added_ttft_p50_ms']['web']:g}",
            cpu_call=f"v1 <= {budget['cpu_ms_per_call']['v1']:g}, web <= {budget['cpu_ms_per_call']['web']:g}",
        )
        rows.append((label, budget_text, *cells))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def git_revision(revision: str | None) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", revision or "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        if revision:
            return head.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True)
        return head.stdout.strip() + ("+work-tree-changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _migrations(source: Path) -> set[str]:
    return {str(path.relative_to(source)) for path in source.glob("*/migrations/*.py")}


def source_snapshot(revision: str, into: Path) -> Path:
    """The files of a commit (git archive), so edits to the work tree cannot change the site mid-run."""
    into.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default=",".join(LAYERS), help="channel layers to run: redis,memory")
    parser.add_argument("--phases", default=",".join(PHASES), help="phases to run: ttft,warm,paced,burst,memory")
    parser.add_argument("--paths", default=",".join(PATHS), help="paths to measure: web,v1")
    parser.add_argument("--quick", action="store_true", help="small counts, to check the bench itself")
    parser.add_argument("--profile", action="store_true", help="also run the TTFT loop and paced load under py-spy")
    parser.add_argument("--profile-only", action="store_true", help="only the py-spy runs")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument(
        "--web-send",
        choices=("stream", "two-requests"),
        default="stream",
        help="web TTFT: the reply in the message POST's own answer (chat.js), or a GET of its stream after it",
    )
    parser.add_argument("--ttft-samples", type=int, default=200)
    parser.add_argument("--ttft-warmup", type=int, default=20)
    parser.add_argument("--ttft-conversations", type=int, default=20, help="chats the TTFT user cycles through")
    parser.add_argument("--ttft-chunks", type=int, default=10, help="short replies, still live when the GET attaches")
    parser.add_argument("--ttft-interval", type=float, default=0.01)
    parser.add_argument("--warm-calls", type=int, default=300, help="back-to-back calls of the warm phase")
    parser.add_argument("--warmup-streams", type=int, default=20)
    parser.add_argument("--paced-streams", type=int, default=200)
    parser.add_argument(
        "--paced-chunks", type=int, default=1500, help="long enough that all streams overlap after the last setup"
    )
    parser.add_argument("--paced-window", type=float, default=15, help="seconds of steady window at most")
    parser.add_argument("--paced-interval", type=float, default=0.02)
    parser.add_argument("--paced-first-delay", type=float, default=0.5, help="seconds before the first chunk")
    parser.add_argument("--burst-senders", type=int, default=200, help="users who start a reply at once")
    parser.add_argument("--burst-chunks", type=int, default=200, help="chunks per burst reply (x --paced-interval)")
    parser.add_argument("--memory-streams", type=int, default=2000, help="streams open at once, on each path")
    parser.add_argument("--memory-chunks", type=int, default=1000)
    parser.add_argument(
        "--memory-interval", type=float, default=9.5, help="seconds between chunks: under the 10 s SSE keep-alive"
    )
    parser.add_argument("--memory-settle", type=float, default=4.0, help="seconds before RSS is read")
    parser.add_argument(
        "--memory-setup-concurrency", type=int, default=8, help="streams being set up at once (below the DB pool)"
    )
    parser.add_argument("--memory-max-errors", type=int, default=50, help="failures after which a step stops")
    parser.add_argument(
        "--pg-max-connections", type=int, help="of the throwaway PostgreSQL; default: room for 2 per stream"
    )
    parser.add_argument("--phase-timeout", type=float, default=300, help="hard limit per load, seconds")
    parser.add_argument("--memory-timeout", type=float, default=900, help="hard limit of the memory phase, seconds")
    parser.add_argument("--wait-idle", type=float, default=90, help="wait at most this long for a quiet machine")
    parser.add_argument(
        "--revision", help="run the site from this commit (a snapshot) instead of the work tree, e.g. HEAD"
    )
    parser.add_argument(
        "--paired",
        metavar="REVISION",
        help="paced: also run a site from this commit at the same time, half the streams on each (same migrations)",
    )
    parser.add_argument(
        "--site-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the site, e.g. DB_POOL_MAX_SIZE=250 (repeatable); the run records it",
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/stream-<time>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ttft_samples, args.ttft_warmup, args.warm_calls = 20, 5, 20
        args.paced_streams, args.warmup_streams, args.paced_chunks, args.paced_window = 20, 5, 300, 3
        args.burst_senders, args.burst_chunks = 20, 100
        args.memory_streams = 50
        args.wait_idle = 5
        args.phase_timeout, args.memory_timeout = 120, 300
    if args.profile and not (BIN / "py-spy").exists():
        parser.error(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
    args.layers = [x for x in args.layers.split(",") if x]
    args.phases = [x for x in args.phases.split(",") if x]
    args.paths = [x for x in args.paths.split(",") if x]
    if any("=" not in item for item in args.site_env):
        parser.error("--site-env takes NAME=VALUE")
    args.site_env = dict(item.split("=", 1) for item in args.site_env)
    if args.profile_only:
        args.phases, args.profile = [], True
    for layer in args.layers:
        if layer not in LAYERS:
            parser.error(f"unknown layer {layer!r}")
    for phase in args.phases:
        if phase not in PHASES:
            parser.error(f"unknown phase {phase!r}")
    for path in args.paths:
        if path not in PATHS:
            parser.error(f"unknown path {path!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
    os.chmod(scratch, 0o755)
    postgres = redis = None
    # Old main held a PostgreSQL connection per open stream: leave room for that, so that a
    # regression shows as a count of backends rather than as errors.
    most = max(args.paced_streams, args.memory_streams if "memory" in args.phases else 0) + args.warmup_streams
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        database_url = os.environ.get("DATABASE_URL", "").strip()
        if not database_url:
            postgres = Postgres(scratch, max_connections=args.pg_max_connections or 2 * most + 200)
            database_url = postgres.start()
            log(f"PostgreSQL on 127.0.0.1:{postgres.port} (max_connections {postgres.max_connections})")
        redis_url = os.environ.get("REDIS_URL", "").strip()
        if "redis" in args.layers and not redis_url:
            redis = Redis(scratch)
            redis_url = redis.start()
            log(f"Redis on 127.0.0.1:{redis.port}")
        args.database_url = database_url.replace("postgres://", "postgresql://", 1)
        run = Run(args=args, scratch=scratch, database_url=database_url, redis_url=redis_url)

        prepare_env = run.site_env("memory", "http://127.0.0.1:9/v1")
        global SOURCE, PAIRED_SOURCE
        if args.revision:
            SOURCE = source_snapshot(args.revision, scratch / "source")
            sys.path.insert(0, str(SOURCE))
            log(f"running the site from {args.revision} ({git_revision(args.revision)}), not the work tree")
        if args.paired:
            PAIRED_SOURCE = source_snapshot(args.paired, scratch / "paired")
            if _migrations(PAIRED_SOURCE) != _migrations(SOURCE):
                raise SystemExit(f"--paired {args.paired} has other migrations than the site measured: one database")
            log(f"paced: a second site from {args.paired} ({git_revision(args.paired)}) beside it")
        for command in (["migrate", "--noinput", "-v", "0"], ["seedcatalog"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=SOURCE, env=prepare_env, check=True)
        django_setup(prepare_env)

        results = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "revision": git_revision(args.revision),
            "paired_revision": git_revision(args.paired) if args.paired else None,
            "machine": {"cores": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
            "budget": BUDGET,
            "settings": {
                k: v for k, v in vars(args).items() if k not in {"database_url", "output"} and not k.startswith("_")
            },
            "layers": {},
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        output = args.output or RESULTS / f"stream-{time.strftime('%Y%m%d-%H%M%S')}.json"
        for layer in args.layers:
            figures: dict = {}
            results["layers"][layer] = figures
            steps = [
                ("ttft", phase_ttft),
                ("warm", phase_warm),
                ("paced", phase_paced),
                ("burst", phase_burst),
                ("memory", phase_memory),
            ]
            for name, phase in steps:
                if name in args.phases:
                    figures[name] = phase(run, layer)
                    output.write_text(json.dumps(results, indent=2, default=str))  # keep what is done so far
                if name in ("ttft", "paced") and args.profile and (name in args.phases or args.profile_only):
                    figures[f"{name}_profiled"] = phase(run, layer, profile=True)
                    output.write_text(json.dumps(results, indent=2, default=str))
        print()
        print(summary_table(results))
        for layer, figures in results["layers"].items():
            for name in ("ttft_profiled", "paced_profiled"):
                for path, profiled in figures.get(name, {}).items():
                    if isinstance(profiled, dict) and "profile" in profiled:
                        print_profile(f"{layer} {path}", profiled)
        print(f"\nwritten to {output}")
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if redis:
            redis.stop()
        if postgres:
            postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def print_profile(layer: str, profiled: dict) -> None:
    for window in ("call", "relay", "setup"):
        profile = profiled["profile"].get(window, {})
        if not profile.get("samples"):
            continue
        unit = profile["unit"]
        print(
            f"\n{layer}: py-spy, {window} window: {profile['samples']} samples"
            f" ({profile['truncated_share'] * 100:.0f}% with truncated stacks),"
            f" {profile[f'cpu_us_per_{unit}']} us of CPU per {unit}"
        )
        for kind in ("by_activity", "self_by_package", "self", "inclusive", "ours"):
            print(f"  {kind}:")
            for row in profile[kind][:12]:
                print(f"    {row['share'] * 100:5.1f}%  {row[f'us_per_{unit}']:8.1f} us/{unit}  {row['frame']}")


if __name__ == "__main__":
    main()
