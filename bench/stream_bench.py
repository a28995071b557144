"""Streaming benchmarks of the site on loopback, against the fake OpenAI-compatible upstream.

    .venv/bin/python bench/stream_bench.py             # all phases, Redis and in-memory layers
    .venv/bin/python bench/stream_bench.py --quick     # small counts: a smoke run of the bench itself
    .venv/bin/python bench/stream_bench.py --profile   # also py-spy the site under the paced load

Three figures, each from the budget in DESIGN.md ("Performance budget"):

- ttft: time to first token the site adds to the upstream's, the browser's path
  (POST the message with session + CSRF, GET the SSE stream, first `event: delta`);
- paced: daphne's CPU per relayed upstream chunk with 200 paced streams at once;
- memory: daphne's RSS per open stream (a reply generating slowly plus its SSE watcher).

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

from tests.servers import free_port, wait_for_http  # noqa: E402

BIN = Path(sys.executable).parent
RESULTS = REPO / "bench" / "results"
# Where the site's code is run from: the work tree, or a snapshot of a commit (--revision).
SOURCE = REPO
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
MODEL = "gpt-4o-mini"
API_KEY = "sk-bench"
STREAM_URL = re.compile(r'data-stream-url="([^"]+)"')
LAYERS = ("redis", "memory")
PHASES = ("ttft", "paced", "memory")

BUDGET = {"added_ttft_p50_ms": 5.0, "cpu_us_per_chunk": 50.0, "kb_per_stream": 64.0, "streams": 2000}


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
def site_server(scratch: Path, env: dict[str, str], name: str) -> Iterator[Site]:
    """The site as one daphne process, like tests/servers.py starts it."""
    port = free_port()
    log_path = scratch / f"site-{name}-{port}.log"
    command = [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "chatsite.asgi:application"]
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            command, cwd=SOURCE, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
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
    """Users with a logged-in session and `conversations_each` empty chats each, in bulk."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.db import connection, transaction
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from accounts.models import User
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
            out.append(BenchUser(user.username, key, get_random_string(32), mine))
        Session.objects.bulk_create(sessions)
    connection.close()
    return out


def password_user_create(username: str, password: str, conversations: int) -> list[int]:
    from django.db import connection

    from accounts.models import User
    from conversations.models import ChatModel, Conversation

    user = User.objects.create_user(username=username, password=password)
    model = ChatModel.objects.get(model_id=MODEL)
    ids = [Conversation.objects.create(user=user, model=model, title=f"bench {j}").pk for j in range(conversations)]
    connection.close()
    return ids


# -- SSE watching (aiohttp) ---------------------------------------------------------------


@dataclass
class Watch:
    """One user's message and its reply stream, as the load generator saw them (monotonic seconds)."""

    sent: float = 0.0
    post_status: int = 0
    path: str = ""
    attached: float | None = None
    first_delta: float | None = None
    done: float | None = None
    frames: int = 0
    offset: int = 0
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
) -> None:
    """GET the SSE stream and read it to `event: done`, counting delta frames."""
    attached_noted = False
    try:
        async with http.get(
            site + watch.path, headers={**user.headers(site), "Accept": "text/event-stream"}
        ) as response:
            if response.status != 200:
                watch.error = f"stream answered {response.status}"
                return
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
                    elif name == "retry" and not attached_noted:
                        attached_noted = True
                        watch.attached = time.monotonic()
                        on_attached()
                    continue
                if event == "delta":
                    watch.frames += 1
                    if watch.first_delta is None:
                        watch.first_delta = time.monotonic()
                    watch.offset = int(event_id)
                    if on_delta:
                        on_delta(watch)
                elif event == "done":
                    watch.status = json.loads(data)["status"]
                    watch.done = time.monotonic()
                event = data = event_id = ""
            if watch.done is None:
                watch.error = "stream ended without event: done"
    except (aiohttp.ClientError, TimeoutError) as error:
        watch.error = f"stream {error.__class__.__name__}"
    finally:
        if not attached_noted:
            on_attached()  # a failed watcher must not hold up the others


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
        client.stream("POST", f"{fake_url}/chat/completions", json=_upstream_body(), headers=_upstream_headers()) as r,
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


def _upstream_headers() -> dict[str, str]:
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


async def ttft_direct(client: httpx.AsyncClient, fake_url: str) -> float:
    """Seconds from the POST to the fake until its first content delta line."""
    started = time.perf_counter()
    first = None
    async with client.stream(
        "POST", f"{fake_url}/chat/completions", json=_upstream_body(), headers=_upstream_headers()
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if first is None and line.startswith("data:") and line != "data: [DONE]":
                chunk = json.loads(line[5:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the fake upstream sent no content")
    return first


async def ttft_site(
    client: httpx.AsyncClient, site: str, csrf: str, conversation: int, n: int
) -> tuple[float, float, bool]:
    """Seconds from the message POST until the first `event: delta` of its reply, and of the POST alone.

    A reply that ended before the stream attached shows up in the browser by
    chat.js fetching the finished message on `event: done`; then that fetch
    ends the wait, and the third value is True.
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


async def ttft_run(
    site: str,
    site_pid: int,
    fake_url: str,
    username: str,
    password: str,
    conversations: list[int],
    args,
    profile_to: Path | None = None,
) -> dict:
    timeout = httpx.Timeout(30)
    async with (
        httpx.AsyncClient(base_url=site, trust_env=False, timeout=timeout) as client,
        httpx.AsyncClient(trust_env=False, timeout=timeout) as fake_client,
    ):
        # Log in through the real form, as a browser does.
        page = await client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        login = await client.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
            headers={"Origin": site},
        )
        if login.status_code != 302 or "sessionid" not in client.cookies:
            raise RuntimeError(f"login failed: HTTP {login.status_code}")
        csrf = client.cookies["csrftoken"]

        direct, through, posts, late = [], [], [], 0
        cpu_start = 0.0
        spy = None
        total = args.ttft_warmup + args.ttft_samples
        deadline = time.monotonic() + args.phase_timeout
        for n in range(total):
            if time.monotonic() > deadline:
                raise TimeoutError(f"TTFT phase still running after {args.phase_timeout} s ({n} samples)")
            if n == args.ttft_warmup:
                cpu_start = cpu_seconds(site_pid)
                spy = PySpy(site_pid, profile_to, args) if profile_to else None
            d = await ttft_direct(fake_client, fake_url)
            s, p, after_end = await ttft_site(client, site, csrf, conversations[n % len(conversations)], n)
            if n >= args.ttft_warmup:
                late += after_end
                direct.append(d * 1000)
                through.append(s * 1000)
                posts.append(p * 1000)
        cpu_used = cpu_seconds(site_pid) - cpu_start
        if spy:
            await asyncio.get_running_loop().run_in_executor(None, spy.stop)
    added = [s - d for s, d in zip(through, direct, strict=True)]
    await asyncio.sleep(2)
    return {
        "site_after_2s": await Monitor(site_pid, args.database_url).now(),
        "samples": len(direct),
        # Everything the site does for one message, sequentially: POST, SSE attach, a
        # short reply relayed (--ttft-chunks), the final writes. Setup cost per stream.
        "site_cpu_ms_per_message": round(cpu_used / len(direct) * 1000, 2) if direct else None,
        "replies_done_before_attach": late,
        "direct_ms": spread(direct),
        "site_ms": spread(through),
        "added_ms": spread(added),  # per sample: site minus the direct probe just before it
        "added_p50_of_medians_ms": round(percentile(through, 0.5) - percentile(direct, 0.5), 2),
        "post_roundtrip_ms": spread(posts),
        "after_post_to_first_delta_ms": spread([s - p for s, p in zip(through, posts, strict=True)]),
    }


# -- Phase 2: CPU per relayed chunk under paced streams -----------------------------------


class Monitor:
    """Samples the site's threads, RSS, open files and PostgreSQL backends while a load runs."""

    def __init__(self, pid: int, database_url: str):
        self.pid = pid
        self.database_url = database_url
        self.peak: Counter = Counter()
        self.samples = 0

    async def backends(self, connection) -> int:
        cursor = await connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return (await cursor.fetchone())[0]

    async def run(self, interval: float = 0.5) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as connection:
            while True:
                status = proc_status(self.pid)
                now = {
                    "threads": status["Threads"],
                    "rss_kb": status["VmRSS"],
                    "open_fds": open_fds(self.pid),
                    "pg_backends": await self.backends(connection),
                }
                for key, value in now.items():
                    self.peak[key] = max(self.peak[key], value)
                self.samples += 1
                await asyncio.sleep(interval)

    async def now(self) -> dict[str, int]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as connection:
            backends = await self.backends(connection)
        status = proc_status(self.pid)
        return {"threads": status["Threads"], "rss_kb": status["VmRSS"], "pg_backends": backends}


class PySpy:
    """py-spy recording the site (raw collapsed stacks) over a window of a load."""

    def __init__(self, pid: int, output: Path, args: argparse.Namespace):
        self.output = output
        command = [str(BIN / "py-spy"), "record", "--pid", str(pid), "--rate", str(args.profile_rate)]
        # --nonblocking: never pause daphne; with a thread per open stream (see README), pausing
        # it for every sample slows it down several times over. Idle threads are left out by
        # py-spy, and samples blocked in C are dropped in profile_summary (IDLE_LEAVES).
        command += ["--format", "raw", "--nonblocking", "--nolineno", "--output", str(output)]
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


async def paced_run(site: Site, users: list[BenchUser], pieces: list[str], args, *, profile_to: Path | None) -> dict:
    """Every user sends a message at once and watches its reply; measured until the steady window ends.

    Daphne's CPU is read before the first POST and over the steady window: from
    the moment every stream has had its first frame (every setup is done, all
    streams relay at once) for --paced-window seconds, or until the first stream
    is 95% through. Chunks relayed are counted from the watchers' SSE offsets,
    since the fake's text is known chunk by chunk. Then the load stops.
    """
    watches = [Watch() for _ in users]
    cumulative = list(itertools.accumulate(len(piece) for piece in pieces))
    window_end_offset = cumulative[int(len(pieces) * 0.95) - 1]
    window: dict[str, Instant] = {}
    window_done = asyncio.Event()
    spies: dict[str, PySpy] = {}
    streaming = 0

    def instant() -> Instant:
        relayed = sum(bisect.bisect_right(cumulative, w.offset) for w in watches)
        return Instant(time.monotonic(), cpu_seconds(site.pid), relayed, sum(w.frames for w in watches))

    def window_close() -> None:
        if "start" in window and "end" not in window:
            window["end"] = instant()
            window_done.set()
            if profile_to:
                spies["relay"].stop_soon()

    def on_delta(watch: Watch) -> None:
        nonlocal streaming
        if watch.frames == 1:
            streaming += 1
            if streaming == len(users):
                window["start"] = instant()
                asyncio.get_running_loop().call_later(args.paced_window, window_close)
                if profile_to:
                    spies["setup"].stop_soon()
                    spies["relay"] = PySpy(site.pid, profile_to.with_name(f"{profile_to.name}-relay.txt"), args)
        if watch.offset >= window_end_offset:
            window_close()

    async def one(user: BenchUser, watch: Watch) -> None:
        if await message_send(http, site.url, user, watch, "Tell me about foxes."):
            await reply_watch(http, site.url, user, watch, lambda: None, on_delta)

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


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


async def warm_up(site: Site, users: list[BenchUser], limit: float) -> int:
    """Run a few complete streams so imports, templates and pools are warm; returns how many completed."""
    watches = [Watch() for _ in users]
    async with http_session(read_timeout=60) as http, asyncio.timeout(limit):

        async def one(user: BenchUser, watch: Watch) -> None:
            if await message_send(http, site.url, user, watch, "Warm up."):
                await reply_watch(http, site.url, user, watch, lambda: None)

        await asyncio.gather(*(one(u, w) for u, w in zip(users, watches, strict=True)))
    return sum(1 for w in watches if w.status == "complete")


# -- Phase 3: memory per open stream ------------------------------------------------------


def settled_rss(pid: int, seconds: float) -> int:
    """RSS in kB once it stops moving: the median of samples over the last second of `seconds`."""
    time.sleep(max(seconds - 1, 0))
    samples = []
    for _ in range(5):
        samples.append(proc_status(pid)["VmRSS"])
        time.sleep(0.2)
    return sorted(samples)[2]


async def memory_run(site: Site, warm: list[BenchUser], users: list[BenchUser], args) -> dict:
    """Open streams in two steps (replies generating, then their watchers) and read the RSS after each."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.memory_setup_concurrency)
    watch_tasks: list[asyncio.Task] = []
    result: dict = {}

    async with http_session(read_timeout=600) as http:

        async def open_all(group: list[BenchUser], watches: list[Watch], *, send: bool, watch: bool) -> None:
            attached_events = [asyncio.Event() for _ in group]

            async def one(user: BenchUser, w: Watch, attached: asyncio.Event) -> None:
                async with limit:
                    if send and not await message_send(http, site.url, user, w, "Tell me a long story."):
                        attached.set()
                        return
                if watch and w.path:
                    async with limit:
                        task = asyncio.create_task(reply_watch(http, site.url, user, w, attached.set))
                        watch_tasks.append(task)
                        await attached.wait()
                else:
                    attached.set()

            await asyncio.gather(*(one(u, w, e) for u, w, e in zip(group, watches, attached_events, strict=True)))

        n = len(users)
        watches = [Watch() for _ in users]
        monitor = Monitor(site.pid, args.database_url)
        try:
            async with asyncio.timeout(args.memory_timeout):
                await open_all(warm, [Watch() for _ in warm], send=True, watch=True)
                base = await loop.run_in_executor(None, settled_rss, site.pid, args.memory_settle)
                result["baseline"] = {**await monitor.now(), "rss_kb": base, "open_fds": open_fds(site.pid)}
                cpu0 = cpu_seconds(site.pid)

                t0 = time.monotonic()
                await open_all(users, watches, send=True, watch=False)
                result["wall_s_send"] = round(time.monotonic() - t0, 1)
                generating = await loop.run_in_executor(None, settled_rss, site.pid, args.memory_settle)
                result["generating"] = {**await monitor.now(), "rss_kb": generating, "open_fds": open_fds(site.pid)}
                result["kb_per_reply_generating"] = round((generating - base) / n, 1)

                t0 = time.monotonic()
                await open_all(users, watches, send=False, watch=True)
                result["wall_s_attach"] = round(time.monotonic() - t0, 1)
                watching = await loop.run_in_executor(None, settled_rss, site.pid, args.memory_settle)
                result["watching"] = {**await monitor.now(), "rss_kb": watching, "open_fds": open_fds(site.pid)}
                result["kb_per_watcher"] = round((watching - generating) / n, 1)
                result["kb_per_stream"] = round((watching - base) / n, 1)
                result["cpu_s_during"] = round(cpu_seconds(site.pid) - cpu0, 2)
                result["watchers_open"] = sum(1 for t in watch_tasks if not t.done()) - len(warm)
        except TimeoutError:
            log(f"memory phase hit the {args.memory_timeout} s limit; keeping what was measured")
            result["error"] = f"timed out after {args.memory_timeout} s"
        finally:
            result["streams"] = n
            result["errors"] = dict(Counter(w.error for w in watches if w.error))
            result["messages_sent"] = sum(1 for w in watches if w.path)
            result["vm_hwm_mb"] = round(proc_status(site.pid)["VmHWM"] / 1024, 1)
            for task in watch_tasks:
                task.cancel()
            await asyncio.gather(*watch_tasks, return_exceptions=True)
    return result


# -- Profile summary ----------------------------------------------------------------------


# Where a sampled stack's CPU goes, by the first marker found in it (most specific first).
ACTIVITIES = [
    ("database: reply_flush (text saved about once a second per reply)", ("reply_flush",)),
    ("database: other, in sync_to_async threads", ("_worker (concurrent/futures/thread.py)",)),
    ("upstream read + parse (llm.py, openai SDK)", ("ReplyStream.", "openai/", "httpx2/", "httpcore2/", "h11/")),
    ("fan-out: frames to watchers (replies/fanout.py)", ("ReplyBroadcast", "Switchboard", "RemoteReply")),
    ("generation, other", ("ReplyGeneration",)),
    ("Redis channel layer: publish writes, subscriber reads", ("channels_redis", "redis/")),
    ("SSE watcher (reply_events)", ("reply_events",)),
    ("Django ASGI handler (response send)", ("django/core/handlers/asgi.py",)),
    ("daphne / twisted HTTP write", ("daphne/", "twisted/")),
    ("asyncio socket I/O", ("asyncio/selector_events.py",)),
]
# Frames every stack passes through: left out of the inclusive ranking.
PLUMBING = ("daphne)", "daphne/cli.py", "daphne/server.py", "asyncio/base_events.py", "asyncio/events.py")
PLUMBING += ("twisted/internet/asyncioreactor.py", "threading.py", "concurrent/futures/thread.py")
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
STACK_ROOTS = ("<module> (daphne)", "Thread._bootstrap (threading.py)")


def profile_summary(path: Path, cpu_seconds_spent: float, units: int, unit: str, top: int) -> dict:
    """Top functions by self and inclusive samples from py-spy's raw output, in µs of CPU per unit."""
    self_samples: Counter = Counter()
    inclusive: Counter = Counter()
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
            if not frame.endswith(PLUMBING):
                inclusive[frame] += n
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
    }


def _package(frame: str) -> str:
    """`function (package/module.py)`, as py-spy names frames, -> the top-level package or module."""
    match = re.search(r"\(([^)]*)\)\s*$", frame)
    file = match.group(1) if match else frame
    return file.split("/", 1)[0].removesuffix(".py")


# -- Orchestration ------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    scratch: Path
    database_url: str
    redis_url: str
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(40))
    counter: int = 0

    def site_env(self, layer: str, fake_url: str) -> dict[str, str]:
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
                # The check still runs on every message (its cost is part of the path), but
                # a bench user sends far more than a person would.
                "RATELIMIT_MESSAGES": "1000000/m",
            }
        )
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
    """Sequential messages; profiled, it is a separate, shorter repetition with py-spy attached."""
    args = run.args
    if profile:
        args = argparse.Namespace(**{**vars(args), "ttft_samples": min(args.ttft_samples, 100)})
    password = secrets.token_urlsafe(16)
    username = run.prefix(layer, "ttft")
    conversations = password_user_create(username, password, args.ttft_conversations)
    with fake_upstream(run.scratch, chunks=args.ttft_chunks, interval=args.ttft_interval) as fake_url:
        with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-ttft") as site:
            load = quiet_machine(args.wait_idle)
            what = "profiled run" if profile else "measurement"
            log(f"{layer}: TTFT {what}, {args.ttft_warmup} warm-up + {args.ttft_samples} samples (load {load})")
            out = None
            if profile:
                RESULTS.mkdir(parents=True, exist_ok=True)
                out = RESULTS / f"profile-{layer}-{time.strftime('%Y%m%d-%H%M%S')}-message.txt"
            meter = OthersMeter()
            result = asyncio.run(
                ttft_run(site.url, site.pid, fake_url, username, password, conversations, args, profile_to=out)
            )
            load.update(others_during(meter))
            result["pg_connect_ms"] = pg_connect_ms(args.database_url)
    if out:
        cpu_s = result["site_cpu_ms_per_message"] / 1000 * result["samples"]
        result["profile"] = {
            "message": profile_summary(out, cpu_s, result["samples"], "message", args.profile_top),
            "files": str(out),
        }
    return {**result, "machine": load}


def phase_paced(run: Run, layer: str, *, profile: bool = False) -> dict:
    args = run.args
    warm = users_create(run.prefix(layer, "warm"), args.warmup_streams)
    users = users_create(run.prefix(layer, "paced"), args.paced_streams)
    fake = {"chunks": args.paced_chunks, "interval": args.paced_interval, "first_delay": args.paced_first_delay}
    with fake_upstream(run.scratch, **fake) as fake_url:
        pieces = asyncio.run(reference_reply(fake_url))
        if len(pieces) != args.paced_chunks:
            raise RuntimeError(f"the fake sent {len(pieces)} content chunks, expected {args.paced_chunks}")
        with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-paced") as site:
            done = asyncio.run(warm_up(site, warm, args.phase_timeout))
            load = quiet_machine(args.wait_idle)
            what = "profiled run" if profile else "measurement"
            log(f"{layer}: paced {what}, {len(users)} streams x {len(pieces)} chunks (warm-up {done} ok; load {load})")
            out = None
            if profile:
                RESULTS.mkdir(parents=True, exist_ok=True)
                out = RESULTS / f"profile-{layer}-{time.strftime('%Y%m%d-%H%M%S')}"
            meter = OthersMeter()
            result = asyncio.run(paced_run(site, users, pieces, args, profile_to=out))
            load.update(others_during(meter))
    result["machine"] = load
    steady = result.get("steady")
    if out and steady:
        result["profile"] = {
            "relay": profile_summary(
                out.with_name(f"{out.name}-relay.txt"), steady["cpu_s"], steady["chunks"], "chunk", args.profile_top
            ),
            "setup": profile_summary(
                out.with_name(f"{out.name}-setup.txt"),
                steady["setup_cpu_ms_per_stream"] / 1000 * len(users),
                len(users),
                "stream",
                args.profile_top,
            ),
            "files": str(out) + "-{setup,relay}.txt",
        }
    return result


def phase_memory(run: Run, layer: str) -> dict:
    args = run.args
    warm = users_create(run.prefix(layer, "memwarm"), args.warmup_streams)
    users = users_create(run.prefix(layer, "memory"), args.memory_streams)
    with fake_upstream(run.scratch, chunks=args.memory_chunks, interval=args.memory_interval) as fake_url:
        with site_server(run.scratch, run.site_env(layer, fake_url), f"{layer}-memory") as site:
            load = quiet_machine(args.wait_idle)
            log(f"{layer}: memory, {len(users)} open streams (load {load})")
            meter = OthersMeter()
            result = asyncio.run(memory_run(site, warm, users, args))
            load.update(others_during(meter))
    return {**result, "machine": load}


def summary_table(results: dict) -> str:
    rows = [("figure", "budget", *results["layers"].keys())]

    lines = [
        ("direct TTFT p50 / p95 (ms)", "", ("ttft", "direct_ms"), "p50p95"),
        ("site TTFT p50 / p95 (ms)", "", ("ttft", "site_ms"), "p50p95"),
        ("added TTFT p50 / p95 (ms)", "<= 5 p50", ("ttft", "added_ms"), "p50p95"),
        ("CPU/chunk, steady window (us)", "<= 50", ("paced", "steady", "cpu_us_per_chunk"), "{}"),
        ("CPU/chunk, all-in (us)", "", ("paced", "cpu_us_per_chunk_all_in"), "{}"),
        ("CPU per message, sequential (ms)", "", ("ttft", "site_cpu_ms_per_message"), "{}"),
        ("CPU before window / stream (ms)", "", ("paced", "steady", "setup_cpu_ms_per_stream"), "{}"),
        ("steady chunks/s relayed (of)", "", ("paced", "steady"), "rate"),
        ("steady daphne CPU (cores)", "", ("paced", "steady", "site_cpu_busy"), "{}"),
        ("chunks per frame (coalescing)", "", ("paced", "steady", "chunks_per_frame"), "{}"),
        ("setup wall / steady window (s)", "", ("paced",), "wall"),
        ("paced stream errors", "0", ("paced", "errors"), "count"),
        ("peak PG backends / threads", "", ("paced", "site_peak"), "peaks"),
        ("KB per open stream", "<= 64", ("memory", "kb_per_stream"), "{}"),
        ("  of which reply / watcher (KB)", "", ("memory",), "split"),
        ("open streams measured", "2000", ("memory", "streams"), "{}"),
        ("others' cores during ttft", "", ("ttft", "machine", "others_busy_cores_during"), "{}"),
        ("others' cores during paced", "", ("paced", "machine", "others_busy_cores_during"), "{}"),
        ("others' cores during memory", "", ("memory", "machine", "others_busy_cores_during"), "{}"),
    ]
    for label, budget, path, fmt in lines:
        cells = []
        for layer in results["layers"].values():
            node = layer
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                cells.append("-")
            elif fmt == "p50p95":
                cells.append(f"{node['p50']} / {node['p95']}")
            elif fmt == "count":
                cells.append(str(sum(node.values())))
            elif fmt == "wall":
                steady = node.get("steady") or {}
                cells.append(f"{steady.get('setup_wall_s', '-')} / {steady.get('wall_s', '-')}")
            elif fmt == "rate":
                cells.append(f"{node['chunks_per_s']} ({node['upstream_chunks_per_s']})")
            elif fmt == "peaks":
                cells.append(f"{node.get('pg_backends', '-')} / {node.get('threads', '-')}")
            elif fmt == "split":
                cells.append(f"{node.get('kb_per_reply_generating', '-')} / {node.get('kb_per_watcher', '-')}")
            else:
                cells.append(fmt.format(node))
        rows.append((label, budget, *cells))
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


def source_snapshot(revision: str, into: Path) -> Path:
    """The files of a commit (git archive), so edits to the work tree cannot change the site mid-run."""
    into.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", revision], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", default=",".join(LAYERS), help="channel layers to run: redis,memory")
    parser.add_argument("--phases", default=",".join(PHASES), help="phases to run: ttft,paced,memory")
    parser.add_argument("--quick", action="store_true", help="small counts, to check the bench itself")
    parser.add_argument("--profile", action="store_true", help="also run the paced load once under py-spy")
    parser.add_argument("--profile-only", action="store_true", help="only the py-spy run of the paced load")
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--ttft-samples", type=int, default=200)
    parser.add_argument("--ttft-warmup", type=int, default=20)
    parser.add_argument("--ttft-conversations", type=int, default=20, help="chats the TTFT user cycles through")
    parser.add_argument("--ttft-chunks", type=int, default=10, help="short replies, still live when the GET attaches")
    parser.add_argument("--ttft-interval", type=float, default=0.01)
    parser.add_argument("--warmup-streams", type=int, default=20)
    parser.add_argument("--paced-streams", type=int, default=200)
    parser.add_argument(
        "--paced-chunks", type=int, default=1500, help="long enough that all streams overlap after the last setup"
    )
    parser.add_argument("--paced-window", type=float, default=15, help="seconds of steady window at most")
    parser.add_argument("--paced-interval", type=float, default=0.02)
    parser.add_argument("--paced-first-delay", type=float, default=0.5, help="seconds before the first chunk")
    parser.add_argument(
        "--memory-streams", type=int, default=1000, help="the budget names 2,000; see README for why 1,000 by default"
    )
    parser.add_argument("--memory-chunks", type=int, default=1000)
    parser.add_argument(
        "--memory-interval", type=float, default=9.5, help="seconds between chunks: under the 10 s SSE keep-alive"
    )
    parser.add_argument("--memory-settle", type=float, default=4.0, help="seconds before RSS is read")
    parser.add_argument("--memory-setup-concurrency", type=int, default=32)
    parser.add_argument(
        "--pg-max-connections", type=int, help="of the throwaway PostgreSQL; default: room for 2 per stream"
    )
    parser.add_argument("--phase-timeout", type=float, default=300, help="hard limit per load, seconds")
    parser.add_argument("--memory-timeout", type=float, default=900, help="hard limit of the memory phase, seconds")
    parser.add_argument("--wait-idle", type=float, default=90, help="wait at most this long for a quiet machine")
    parser.add_argument(
        "--revision", help="run the site from this commit (a snapshot) instead of the work tree, e.g. HEAD"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default bench/results/stream-<time>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ttft_samples, args.ttft_warmup = 20, 5
        args.paced_streams, args.warmup_streams, args.paced_chunks, args.paced_window = 20, 5, 300, 3
        args.memory_streams = 50
        args.wait_idle = 5
    if args.profile and not (BIN / "py-spy").exists():
        parser.error(f"--profile needs py-spy: {BIN / 'pip'} install py-spy")
    args.layers = [x for x in args.layers.split(",") if x]
    args.phases = [x for x in args.phases.split(",") if x]
    if args.profile_only:
        args.phases, args.profile = [], True
    for layer in args.layers:
        if layer not in LAYERS:
            parser.error(f"unknown layer {layer!r}")
    for phase in args.phases:
        if phase not in PHASES:
            parser.error(f"unknown phase {phase!r}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
    os.chmod(scratch, 0o755)
    postgres = redis = None
    # Each open stream holds PostgreSQL connections (see README); leave room for all of them.
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
        global SOURCE
        if args.revision:
            SOURCE = source_snapshot(args.revision, scratch / "source")
            sys.path.insert(0, str(SOURCE))
            log(f"running the site from {args.revision} ({git_revision(args.revision)}), not the work tree")
        for command in (["migrate", "--noinput", "-v", "0"], ["seedcatalog"]):
            subprocess.run([sys.executable, "manage.py", *command], cwd=SOURCE, env=prepare_env, check=True)
        django_setup(prepare_env)

        results = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "revision": git_revision(args.revision),
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
            steps = [("ttft", phase_ttft), ("paced", phase_paced), ("memory", phase_memory)]
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
                if "profile" in figures.get(name, {}):
                    print_profile(layer, figures[name])
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
    for window in ("message", "relay", "setup"):
        profile = profiled["profile"].get(window, {})
        if not profile.get("samples"):
            continue
        unit = profile["unit"]
        print(
            f"\n{layer}: py-spy, {window} window: {profile['samples']} samples"
            f" ({profile['truncated_share'] * 100:.0f}% with truncated stacks),"
            f" {profile[f'cpu_us_per_{unit}']} us of CPU per {unit}"
        )
        for kind in ("by_activity", "self_by_package", "self", "inclusive"):
            print(f"  {kind}:")
            for row in profile[kind][:12]:
                print(f"    {row['share'] * 100:5.1f}%  {row[f'us_per_{unit}']:8.1f} us/{unit}  {row['frame']}")


if __name__ == "__main__":
    main()
