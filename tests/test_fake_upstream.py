"""The fake upstream speaks OpenAI's wire format: the official SDK must accept it as real.

No database here: these tests run with or without pytest-django.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Hang, Refuse, Reply, Status

MESSAGES = [{"role": "user", "content": "Say hello"}]
AUTH = {"Authorization": "Bearer test"}


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def client(fake: FakeUpstream) -> openai.OpenAI:
    # No retries: each scripted fault must reach the test exactly once.
    return openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)


def sse_events(fake: FakeUpstream, **body: object) -> list[str]:
    """The raw `data:` payloads of one streamed reply, read the way the site reads them."""
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, **body}
    with httpx.stream("POST", f"{fake.base_url}/chat/completions", json=request, headers=AUTH) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def test_streamed_reply_yields_the_exact_text_and_usage(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply("Hi there, friend.", prompt_tokens=11, cached_tokens=4))

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi there, friend."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 3, 14)
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert {c.id for c in chunks} == {chunks[0].id}
    assert chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].model == "gpt-4o-mini"


def test_stream_events_match_openai_framing(fake: FakeUpstream) -> None:
    events = sse_events(fake, stream_options={"include_usage": True})

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]] == [
        "Hello ",
        "from ",
        "the ",
        "fake ",
        "upstream.",
    ]
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == len("Say hello") // 4 + 1
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["service_tier"] == "default"
        assert chunk["system_fingerprint"].startswith("fp_")
        assert isinstance(chunk["created"], int)


def test_exact_usage_counts_every_byte_of_the_prompt_and_cuts_the_reply_at_max_tokens(
    fake: FakeUpstream, client: openai.OpenAI
) -> None:
    fake.script(Reply("你好，世界 👋 and more", usage="exact"), Reply("Short.", usage="exact"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "日本語 é"}]

    cut = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=10)
    whole = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=10, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(whole)

    # 3 to prime the reply; per message 3 of framing, its role's bytes and its content's bytes.
    prompt = 3 + (3 + 6 + 9) + (3 + 4 + 12)
    assert cut.choices[0].message.content == "你好，"  # 10 bytes would split the 4th character
    assert cut.choices[0].finish_reason == "length"
    assert (cut.usage.prompt_tokens, cut.usage.completion_tokens) == (prompt, 10)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Short."
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt, 6)


def test_stream_without_include_usage_has_no_usage_field(fake: FakeUpstream) -> None:
    events = sse_events(fake)

    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_stream_is_written_as_it_goes_not_buffered(fake: FakeUpstream) -> None:
    fake.script(Reply(chunks=["a", "b", "c"], delay=0.1))
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    arrivals = []

    with httpx.stream("POST", f"{fake.base_url}/chat/completions", json=request, headers=AUTH) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and "content" in json.loads(line[6:])["choices"][0]["delta"]:
                arrivals.append(time.monotonic())

    assert len(arrivals) == 4  # the role chunk, then "a", "b", "c"
    assert arrivals[-1] - arrivals[1] >= 0.15


def test_non_streamed_reply(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply("All at once."))

    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.content == "All at once."
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 3


def test_script_is_consumed_in_order_then_the_default_answers(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply("one"), Reply("two"))

    answers = [client.chat.completions.create(model="gpt-4o", messages=MESSAGES) for _ in range(3)]

    assert [a.choices[0].message.content for a in answers] == ["one", "two", "Hello from the fake upstream."]


def test_rate_limit_raises_with_retry_after(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Status(429, retry_after=2))

    with pytest.raises(openai.RateLimitError) as excinfo:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    assert excinfo.value.response.headers["retry-after"] == "2"
    assert excinfo.value.code == "rate_limit_exceeded"


def test_scripted_invalid_api_key_raises_authentication_error(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Status.invalid_api_key())

    with pytest.raises(openai.AuthenticationError) as excinfo:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert excinfo.value.code == "invalid_api_key"


def test_a_wrong_key_is_rejected_when_the_fake_expects_one() -> None:
    with FakeUpstream(api_key="sk-right") as fake:
        wrong = openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0)
        right = openai.OpenAI(base_url=fake.base_url, api_key="sk-right", max_retries=0)

        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        assert right.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices


def test_missing_bearer_token_is_401(fake: FakeUpstream) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}

    response = httpx.post(f"{fake.base_url}/chat/completions", json=body)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_invalid_json_is_400(fake: FakeUpstream) -> None:
    response = httpx.post(f"{fake.base_url}/chat/completions", content=b"{oops", headers=AUTH)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests[0].json is None


def test_context_length_exceeded_raises_bad_request(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Status.context_length_exceeded())

    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert excinfo.value.code == "context_length_exceeded"
    assert excinfo.value.param == "messages"
    assert "maximum context length" in excinfo.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_raise_internal_server_error(fake: FakeUpstream, client: openai.OpenAI, status: int) -> None:
    fake.script(Status.server_error(status))

    with pytest.raises(openai.InternalServerError) as excinfo:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert excinfo.value.status_code == status


def test_model_not_found_raises_not_found(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Status.model_not_found("gpt-9"))

    with pytest.raises(openai.NotFoundError) as excinfo:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)

    assert excinfo.value.code == "model_not_found"


def test_a_cut_stream_makes_iteration_raise(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply("one two three four", cut_after=2))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    received = []

    # This SDK wraps the transport's "incomplete chunked read" in APIConnectionError.
    with pytest.raises(openai.APIConnectionError) as excinfo:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)

    assert received == ["", "one ", "two "]
    assert "incomplete chunked read" in str(excinfo.value.__cause__)
    assert fake.disconnects == 0  # the fake hung up, not the client


def test_a_cut_stream_read_raw_raises_an_httpx_error(fake: FakeUpstream) -> None:
    fake.script(Reply("one two three", cut_after=1))

    with pytest.raises(httpx.RemoteProtocolError):
        sse_events(fake)


def test_refuse_raises_api_connection_error(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Refuse())

    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    assert len(fake.requests) == 1


def test_hang_makes_the_client_time_out_and_counts_as_a_disconnect(fake: FakeUpstream) -> None:
    fake.script(Hang(30))
    impatient = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=0.2)

    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    fake.wait_for_disconnects(1, timeout=2)


def test_in_stream_error_raises_api_error(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply("one two three", error_after=1))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    with pytest.raises(openai.APIError, match="server had an error"):
        list(stream)


def test_malformed_line_is_sent_mid_stream(fake: FakeUpstream) -> None:
    fake.script(Reply("one two", malformed_after=1))

    events = sse_events(fake)

    assert events[2] == "{not json"
    assert json.loads(events[3])["choices"][0]["delta"]["content"] == "two"
    assert events[-1] == "[DONE]"


def test_requests_record_what_the_client_sent(fake: FakeUpstream, client: openai.OpenAI) -> None:
    list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=64, stream=True, stream_options={"include_usage": True}
        )
    )

    (request,) = fake.wait_for_requests(1)
    assert request.json["model"] == "gpt-4o-mini"
    assert request.json["max_tokens"] == 64
    assert request.json["stream_options"] == {"include_usage": True}
    assert request.json["messages"] == MESSAGES
    assert request.headers["authorization"] == "Bearer test"
    # The client can read [DONE] a moment before the server's handler marks the response finished.
    deadline = time.monotonic() + 2
    while not request.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert request.finished


def test_closing_a_stream_early_counts_a_disconnect_and_stops_writing(
    fake: FakeUpstream, client: openai.OpenAI
) -> None:
    fake.script(Reply(chunks=["tick "] * 100, delay=0.02))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    next(stream)
    next(stream)
    stream.close()

    fake.wait_for_disconnects(1, timeout=2)
    (request,) = fake.requests
    sent = request.chunks_sent
    time.sleep(0.1)
    assert request.chunks_sent == sent < 100
    assert request.disconnected and not request.finished


def test_closing_a_hung_stream_counts_a_disconnect(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply("one two", hang_after=1))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    assert [next(stream).choices[0].delta.content for _ in range(2)] == ["", "one "]
    stream.close()

    fake.wait_for_disconnects(1, timeout=2)


def test_stop_does_not_wait_for_open_streams() -> None:
    fake = FakeUpstream().start()
    fake.script(Reply(hang_after=0))
    request = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{fake.base_url}/chat/completions", json=request, headers=AUTH) as response:
        lines = response.iter_lines()  # keep a reference: dropping it would close the connection
        next(lines)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
    assert fake.disconnects == 0


def test_reset_clears_script_requests_and_default(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Status(500), Status(500))
    fake.default = Reply("changed")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    fake.reset()

    assert fake.requests == []
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.choices[0].message.content == "Hello from the fake upstream."


def test_a_stream_left_over_from_before_reset_does_not_count(fake: FakeUpstream, client: openai.OpenAI) -> None:
    fake.script(Reply(hang_after=0))
    leftover = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    next(leftover)

    fake.reset()
    fake.script(Reply(hang_after=0))
    current = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    next(current)
    leftover.close()
    current.close()

    fake.wait_for_disconnects(1, timeout=2)
    time.sleep(0.05)
    assert fake.disconnects == 1


def test_models_lists_the_catalog(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]

    assert ids == ["gpt-4o-mini", "gpt-4o", "smollm2-135m"]


def test_command_line_serves_paced_streams_until_interrupted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--chunks", "3", "--interval", "0.01"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert f"127.0.0.1:{port}" in process.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test", max_retries=0)
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert len(text.split()) == 3
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
