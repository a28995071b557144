"""The declared schema's promise for every input: a clear refusal, or a body that is clean JSON and fully declared."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.chat_request import CHAT_BODY, chat_request_parse
from gateway.schema import InvalidRequest, json_body_parse

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=20,
)
# Values that fit some field somewhere, so that broken bodies are often near a valid one.
FITTING = st.sampled_from(
    [True, False, 1, 7, 0.5, "auto", "low", "none", ["text"], ["\n"], {"type": "text"}, {"type": "json_object"},
     {"include_usage": True}, [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]]
)  # fmt: skip
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user"]), "content": st.text(max_size=20)}
) | st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool"]) | ANY_JSON},
    optional={"content": FITTING | ANY_JSON, "tool_call_id": ANY_JSON, "name": ANY_JSON},
)
NEAR_VALID = st.builds(
    dict.__or__,
    st.fixed_dictionaries(
        {"model": st.just("gpt-4o-mini") | ANY_JSON, "messages": st.lists(MESSAGE, min_size=1, max_size=3)}
    ),
    st.dictionaries(st.sampled_from(sorted(CHAT_BODY.fields)), FITTING | ANY_JSON, max_size=3),
)


def forwarded(body) -> dict | None:
    """What would go upstream for this body, or None when it is refused with a clear error."""
    try:
        chat = chat_request_parse(body)
    except InvalidRequest as refused:
        assert refused.message
        return None
    return {"model": chat.model, "messages": chat.messages, "max_tokens": chat.max_tokens or 1} | chat.options


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(body=NEAR_VALID | ANY_JSON)
def test_a_body_is_refused_clearly_or_forwarded_clean_and_fully_declared(body):
    upstream = forwarded(body)

    if upstream is not None:
        assert CHAT_BODY.admits(upstream)
        json.dumps(upstream, allow_nan=False).encode()  # strict JSON, valid UTF-8


@settings(max_examples=200, deadline=None, derandomize=True)
@given(raw=st.binary(max_size=200) | ANY_JSON.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_are_json_or_a_clear_refusal(raw):
    try:
        json_body_parse(raw)
    except InvalidRequest as refused:
        assert refused.message
