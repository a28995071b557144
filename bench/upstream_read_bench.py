"""CPU per chunk of reading paced upstream streams, by client: what conversations/llm.py's read costs.

    .venv/bin/python bench/upstream_read_bench.py [--streams 200 --chunks 400 --interval 0.02]

Runs tests/fake_upstream.py on loopback and reads `--streams` paced replies at
once in this process, several ways, measuring this process's CPU (all threads) per
content chunk:

- llm-raw-events: conversations/llm.py's ReplyStream.raw_events(), what the /v1 relay
  reads (the openai SDK's AsyncOpenAI, events split from each read's bytes, few parsed);
- llm-deltas: conversations/llm.py's ReplyStream.deltas(), what a web reply reads
  (the same, every chunk parsed with json.loads);
- httpx-lines: the reader llm.py had before the SDK (httpx client.send(stream=True),
  aiter_lines, json.loads);
- httpx-raw: the same client, aiter_raw, SSE lines split from the bytes by hand;
- aiohttp: aiohttp's client (a test dependency here, not a runtime one), for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stream_bench import API_KEY, _upstream_body, fake_upstream, log

LLM_WAYS = ("llm-raw-events", "llm-deltas")


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def content_of(payload: bytes | str) -> str:
    chunk = json.loads(payload)
    return chunk["choices"][0]["delta"].get("content") or "" if chunk["choices"] else ""


async def read_httpx_lines(client: httpx.AsyncClient, url: str) -> int:
    request = client.build_request("POST", url, json=_upstream_body(), headers=_headers())
    response = await client.send(request, stream=True)
    count = 0
    try:
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            count += bool(content_of(payload))
    finally:
        await response.aclose()
    return count


async def read_httpx_raw(client: httpx.AsyncClient, url: str) -> int:
    request = client.build_request("POST", url, json=_upstream_body(), headers=_headers())
    response = await client.send(request, stream=True)
    count = 0
    pending = b""
    try:
        async for data in response.aiter_raw():
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return count
                count += bool(content_of(payload))
    finally:
        await response.aclose()
    return count


async def read_aiohttp(session: aiohttp.ClientSession, url: str) -> int:
    count = 0
    async with session.post(url, json=_upstream_body(), headers=_headers()) as response:
        async for line in response.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            count += bool(content_of(payload))
    return count


async def read_llm_raw_events(llm, url: str) -> int:
    stream = await llm.stream_open(_upstream_body())
    count = 0
    try:
        async for event in stream.raw_events():
            count += b'"delta":{"content":"' in event  # a content chunk, told apart without parsing it
    finally:
        await stream.close()
    return count


async def read_llm_deltas(llm, url: str) -> int:
    body = _upstream_body()
    stream = await llm.reply_stream_open(
        model_id=body["model"], messages=body["messages"], max_tokens=body["max_tokens"]
    )
    count = 0
    try:
        async for _ in stream.deltas():
            count += 1
    finally:
        await stream.close()
    return count


def _llm(base_url: str):
    """conversations/llm.py with the site's settings, pointed at the fake (no database is touched)."""
    import os

    import django

    os.environ.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY=API_KEY,
        UPSTREAM_RETRIES="0",
        VAR_DIR=str(Path(tempfile.gettempdir()) / "upstream-read-bench"),
    )
    django.setup()
    from conversations import llm

    return llm


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", "Accept": "text/event-stream"}


async def run(way: str, url: str, streams: int) -> tuple[int, float, float]:
    if way in LLM_WAYS:
        client = contextlib.nullcontext(_llm(url.removesuffix("/chat/completions")))
        read = read_llm_raw_events if way == "llm-raw-events" else read_llm_deltas
    elif way == "aiohttp":
        client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        read = read_aiohttp
    else:
        # As llm.py built its client before the openai SDK.
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(60, connect=10),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
            trust_env=False,
        )
        read = read_httpx_lines if way == "httpx-lines" else read_httpx_raw
    async with client as session:
        await asyncio.gather(*(read(session, url) for _ in range(10)))  # warm-up
        cpu, started = process_cpu(), time.monotonic()
        counts = await asyncio.gather(*(read(session, url) for _ in range(streams)))
        return sum(counts), process_cpu() - cpu, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--ways", default="llm-raw-events,llm-deltas,httpx-lines,httpx-raw,aiohttp")
    args = parser.parse_args()
    scratch = Path("/tmp")
    with fake_upstream(scratch, chunks=args.chunks, interval=args.interval) as base_url:
        url = f"{base_url}/chat/completions"
        for way in args.ways.split(","):
            chunks, cpu, wall = asyncio.run(asyncio.wait_for(run(way, url, args.streams), 600))
            log(
                f"{way:12} {chunks} chunks in {wall:.1f} s: {cpu / chunks * 1e6:.1f} us CPU per chunk"
                f" ({cpu / wall:.2f} cores)"
            )


if __name__ == "__main__":
    main()
