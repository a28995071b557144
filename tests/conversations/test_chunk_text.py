"""A streamed chunk's text, as the chat reads it (ReplyStream.deltas): read where it stands in the chunk for
plain text chunks, it must be exactly what parsing the whole chunk gives, for any text and any JSON spacing."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conversations.llm import ReplyStream, UpstreamError

COMPACT, SPACED = (",", ":"), (", ", ": ")


def chunk(delta: dict, *, separators=COMPACT, ensure_ascii=True, **extra) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        "usage": None,
        **extra,
    }
    return json.dumps(body, separators=separators, ensure_ascii=ensure_ascii).encode()


def stream_past_its_first_chunk() -> ReplyStream:
    stream = ReplyStream(response=None, model_id="gpt-4o-mini")
    stream._text_of(chunk({"role": "assistant", "content": ""}))
    return stream


@given(
    text=st.text(),
    with_role=st.booleans(),
    separators=st.sampled_from([COMPACT, SPACED]),
    ensure_ascii=st.booleans(),
)
def test_a_chunks_text_is_what_parsing_it_whole_gives(text, with_role, separators, ensure_ascii):
    delta = {"role": "assistant", "content": text} if with_role else {"content": text}
    data = chunk(delta, separators=separators, ensure_ascii=ensure_ascii)

    assert stream_past_its_first_chunk()._text_of(data) == text


def test_the_first_chunk_names_the_model_and_the_last_the_finish_reason_and_usage():
    stream = stream_past_its_first_chunk()
    assert stream.reported_model == "gpt-4o-mini-2024-07-18"

    assert stream._text_of(chunk({"content": "Done."})) == "Done."
    last = chunk({}, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    last = last.replace(b'"finish_reason":null', b'"finish_reason":"stop"')
    assert stream._text_of(last) == ""

    assert stream.finish_reason == "stop"
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (3, 2)


@pytest.mark.parametrize(
    "data",
    [
        chunk({"content": "fine"}).replace(b'"fine"', b'"bad \\q escape"'),
        chunk({"content": "fine"}).replace(b'"fine"', b'"never closed'),
        chunk({"content": "fine"}, error={"message": "overloaded"}),
        chunk({"content": "fine"}).replace(b"fine", b"\xff\xfe"),
    ],
)
def test_a_chunk_that_is_not_plain_text_is_not_read_as_text(data):
    with pytest.raises(UpstreamError) as failed:
        stream_past_its_first_chunk()._text_of(data)

    assert failed.value.code in ("malformed_chunk", "upstream_error")
