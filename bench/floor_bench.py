"""The floors under the site's /v1 figures: the same measurements of two lesser apps served the same way.

    .venv/bin/python bench/floor_bench.py [--apps bare,django] [--output F]

Each app (daphne on uvloop, as the site) is measured as stream_bench.py's
ttft, warm and paced phases measure the site's /v1: added time to first token
against direct calls to the fake, in pairs, with the machine idle around each
call; its CPU per call, one at a time and back to back; and its CPU per relayed
chunk with 200 paced streams at once.

- bare (bare_relay.py): an ASGI app relaying to the fake through httpx, with
  no Django, no key, no database, no quota; also the same chunks written by the
  app itself, nothing read (what daphne costs a chunk).
- django (floor_site.py): the least issue 7 asks of a metered call on the fixed
  stack (Django's handler, a rate limit, a reservation, the openai SDK, a
  settlement), on a PostgreSQL and a Redis started for it.

Whatever the site's figures are above `django` is the cost of what the site
does beyond that least; `bare` is the server's and the machine's own.
bench/README.md has the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
from stream_bench import (
    BIN,
    RESULTS,
    SOURCE,
    BenchUser,
    OthersMeter,
    Postgres,
    Redis,
    Site,
    cpu_seconds,
    deployed_env,
    fake_upstream,
    free_port,
    idle_penalty,
    log,
    others_during,
    paced_run,
    quiet_machine,
    reference_reply,
    spread,
    stop_process,
    ttft_stream,
    upstream_headers,
    wait_for_http,
)

# What the bench's clients send as their key: floor_site.py's; bare_relay.py reads none.
FLOOR_CALLER = BenchUser("floor", session="", csrf="", conversations=[], api_key="floor-key")
APPS = ("bare", "django")


@contextlib.contextmanager
def served(scratch: Path, app: str, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """`app` (module:attribute, in bench/) served by chatsite.serve on a free port; yields its URL and daphne's pid."""
    port = free_port()
    env = {**os.environ, **deployed_env(SOURCE), **env, "PYTHONPATH": f"{Path(__file__).parent}:{SOURCE}"}
    command = [str(BIN / "python"), "-m", "chatsite.serve", "-b", "127.0.0.1", "-p", str(port), app]
    with open(scratch / f"{app.partition(':')[0]}.log", "ab") as out:
        process = subprocess.Popen(command, cwd=SOURCE, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", 30, process=process)
        yield url, process.pid
    finally:
        stop_process(process)


def bare_relay(scratch: Path, upstream: str, emit: str = ""):
    """bare_relay.py served; with `emit` ("chunks,interval,first delay") it writes its chunks itself instead of
    relaying the upstream's."""
    return served(scratch, "bare_relay:application", {"BARE_RELAY_UPSTREAM": upstream, "BARE_RELAY_EMIT": emit})


@dataclass
class Backends:
    """PostgreSQL and Redis for floor_site.py, started for the bench as stream_bench starts them."""

    database: str
    redis: str


def floor_site(scratch: Path, upstream: str, backends: Backends):
    """floor_site.py served, on the bench's PostgreSQL and Redis."""
    env = {"FLOOR_SITE_UPSTREAM": upstream, "FLOOR_SITE_KEY": FLOOR_CALLER.api_key}
    env |= {"FLOOR_SITE_DATABASE": backends.database, "FLOOR_SITE_REDIS": backends.redis}
    return served(scratch, "floor_site:application", env)


async def ttft_pairs(url: str, pid: int, fake: str, warmup: int, samples: int) -> dict:
    """Pairs of calls, the fake's directly then the relay's, as stream_bench.ttft_run makes them for /v1."""
    timeout = httpx.Timeout(30)
    async with (
        httpx.AsyncClient(trust_env=False, timeout=timeout) as client,
        httpx.AsyncClient(trust_env=False, timeout=timeout) as direct_client,
    ):
        direct, through, cpu_start = [], [], 0.0
        for n in range(warmup + samples):
            if n == warmup:
                cpu_start = cpu_seconds(pid)
            d = await ttft_stream(direct_client, f"{fake}/chat/completions", upstream_headers())
            s = await ttft_stream(client, f"{url}/v1/chat/completions", FLOOR_CALLER.api_headers())
            if n >= warmup:
                direct.append(d * 1000)
                through.append(s * 1000)
        cpu = cpu_seconds(pid) - cpu_start
    return {
        "samples": samples,
        "cpu_ms_per_call": round(cpu / samples * 1000, 2),
        "direct_ms": spread(direct),
        "relay_ms": spread(through),
        "added_ms": spread([s - d for s, d in zip(through, direct, strict=True)]),
    }


async def back_to_back(url: str, pid: int, warmup: int, calls: int) -> dict:
    async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30)) as client:
        for n in range(warmup + calls):
            if n == warmup:
                cpu_start, started = cpu_seconds(pid), time.perf_counter()
            await ttft_stream(client, f"{url}/v1/chat/completions", FLOOR_CALLER.api_headers())
        cpu, wall = cpu_seconds(pid) - cpu_start, time.perf_counter() - started
    return {
        "calls": calls,
        "cpu_ms_per_call": round(cpu / calls * 1000, 2),
        "wall_ms_per_call": round(wall / calls * 1000, 2),
    }


# The fake of stream_bench's paced phase: long replies, so that every stream runs at once once all have started.
PACED = {"chunks": 1500, "interval": 0.02, "first_delay": 0.5}


async def paced(url: str, pid: int, pieces: list[str], streams: int, window: float) -> dict:
    """stream_bench's paced load: `streams` long replies of `pieces` at once, CPU per chunk over the steady window."""
    users = [FLOOR_CALLER] * streams
    # What paced_run reads of stream_bench's arguments; no database to watch here.
    args = SimpleNamespace(
        paced_window=window,
        paced_first_delay=PACED["first_delay"],
        paced_interval=PACED["interval"],
        phase_timeout=300,
        database_url="",
        web_send="stream",  # read for the web's streams only
    )
    site = Site(url=url, pid=pid, log=Path(os.devnull))
    return await paced_run(site, users, pieces, "v1", args, profile_to=None)


def measured(what, *args) -> dict:
    load = quiet_machine(90)
    meter = OthersMeter()
    result = asyncio.run(what(*args))
    load.update(others_during(meter))
    return {**result, "machine": load}


def app_measured(app: str, scratch: Path, args, backends: Backends | None) -> dict:
    """One app's ttft, warm and paced figures (and, for the bare relay, its paced writes with nothing read)."""

    def serve(upstream: str):
        return bare_relay(scratch, upstream) if app == "bare" else floor_site(scratch, upstream, backends)

    result: dict = {}
    # The fakes as stream_bench's ttft (10 chunks 10 ms apart) and warm (10 chunks at once) phases start them.
    with fake_upstream(scratch, chunks=10, interval=0.01) as fake, serve(fake) as (url, pid):
        log(f"{app}: time to first token, pairs with the fake's own")
        result["ttft"] = measured(ttft_pairs, url, pid, fake, args.warmup, args.samples)
    with fake_upstream(scratch, chunks=10, interval=0.0) as fake, serve(fake) as (url, pid):
        log(f"{app}: back to back")
        result["warm"] = measured(back_to_back, url, pid, args.warmup, args.warm_calls)
    with fake_upstream(scratch, **PACED) as fake, serve(fake) as (url, pid):
        log(f"{app}: {args.paced_streams} paced streams")
        pieces = asyncio.run(reference_reply(fake))
        result["paced"] = measured(paced, url, pid, pieces, args.paced_streams, args.paced_window)
    if app == "bare":
        emit = ",".join(str(PACED[name]) for name in ("chunks", "interval", "first_delay"))
        with bare_relay(scratch, "", emit=emit) as (url, pid):
            log(f"bare relay writing its own chunks: {args.paced_streams} paced streams")
            result["paced_writes"] = measured(paced, url, pid, pieces, args.paced_streams, args.paced_window)
    return result


def summary(app: str, result: dict, streams: int) -> None:
    ttft, warm, steady = result["ttft"], result["warm"], result["paced"].get("steady", {})
    print(f"{app}: added TTFT p50 / p95: {ttft['added_ms']['p50']} / {ttft['added_ms']['p95']} ms")
    print(f"  CPU a call, idle between: {ttft['cpu_ms_per_call']} ms; back to back: {warm['cpu_ms_per_call']} ms")
    print(f"  CPU a chunk, {streams} paced, steady: {steady.get('cpu_us_per_chunk')} µs relayed")
    if "paced_writes" in result:
        print(f"  and {result['paced_writes'].get('steady', {}).get('cpu_us_per_chunk')} µs written with nothing read")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default=",".join(APPS), help="bare (bare_relay.py), django (floor_site.py)")
    parser.add_argument("--samples", type=int, default=200, help="pairs of the ttft measurement (stream_bench's)")
    parser.add_argument("--warm-calls", type=int, default=300, help="calls back to back (stream_bench's)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--paced-streams", type=int, default=200, help="streams at once (stream_bench's)")
    parser.add_argument("--paced-window", type=float, default=15, help="seconds of steady window at most")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    apps = [app.strip() for app in args.apps.split(",") if app.strip()]
    if unknown := set(apps) - set(APPS):
        parser.error(f"unknown apps: {', '.join(sorted(unknown))}")
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"floor-bench-{os.getpid()}"
    scratch.mkdir(parents=True)
    os.chmod(scratch, 0o755)
    result: dict = {"idle_penalty": idle_penalty()}
    postgres = redis = None
    try:
        backends = None
        if "django" in apps:
            postgres, redis = Postgres(scratch, max_connections=100), Redis(scratch)
            backends = Backends(database=postgres.start(), redis=redis.start())
        for app in apps:
            result[app] = app_measured(app, scratch, args, backends)
    finally:
        for backend in (postgres, redis):
            if backend is not None:
                backend.stop()
    output = args.output or RESULTS / f"floor-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    for app in apps:
        summary(app, result[app], args.paced_streams)
    print(f"written to {output}")


if __name__ == "__main__":
    main()
