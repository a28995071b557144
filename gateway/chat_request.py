"""Checking a Chat Completions request from an app before anything of it goes upstream.

CHAT_BODY declares every field a request may carry, to every level of nesting
(gateway/schema.py checks it). The rule for fields of OpenAI's reference:

- forwarded as they are, checked: the sampling fields (temperature, top_p,
  penalties, seed, stop, n=1), tools and tool_choice, response_format,
  parallel_tool_calls, reasoning_effort, verbosity, logprobs and top_logprobs,
  modalities (text only). None of them can make a call cost more than the
  prompt and max tokens reserved for it: reasoning tokens are completion
  tokens, bounded by the token limit.
- the token limit: `max_completion_tokens` or `max_tokens`, whichever the app
  sent, capped by the model and the user's limits, and sent upstream under the
  name the catalog says the model takes (ChatModel.token_limit_param).
- dropped: OpenAI's own bookkeeping of the call (user, metadata, store, service
  tier, prompt caching options), meaningless to another upstream.
- refused with a reason (UNSUPPORTED): what a proxy that meters tokens cannot
  pass safely: audio, predicted outputs and web search cost money the usage
  figures do not bound or show; logit_bias names token ids of one tokenizer;
  the deprecated functions API.
- anything else, at any depth: "Unrecognized request argument supplied".

Image parts are taken in user messages; whether the model accepts them is
the catalog's to say, checked once the model is known (gateway/chat_completions.py).
"""

from dataclasses import dataclass, field

from gateway.schema import (
    Array,
    Boolean,
    FreeJson,
    ImageUrl,
    Integer,
    InvalidRequest,
    Number,
    Object,
    OneOf,
    String,
    Tagged,
    schema_check,
)

__all__ = ["CHAT_BODY", "ChatRequest", "InvalidRequest", "chat_request_parse"]

# OpenAI's rule for function and schema names.
NAME = String(pattern=r"[a-zA-Z0-9_-]{1,64}", shape="1 to 64 letters, digits, underscores or dashes")


def _kind(name: str) -> String:
    return String(choices=[name])


TEXT_PART = Object({"type": _kind("text"), "text": String()}, required=["type", "text"])
IMAGE_DETAILS = ("auto", "low", "high")
IMAGE_PART = Object(
    {
        "type": _kind("image_url"),
        "image_url": Object({"url": ImageUrl(), "detail": String(choices=IMAGE_DETAILS)}, required=["url"]),
    },
    required=["type", "image_url"],
)
REFUSAL_PART = Object({"type": _kind("refusal"), "refusal": String()}, required=["type", "refusal"])
NOT_METERED = {
    "input_audio": "audio input is not metered here.",
    "file": "file inputs are not metered here.",
}


def _content(*parts: Object) -> OneOf:
    variants = {part.fields["type"].choices[0]: part for part in parts}
    return OneOf(String(), Array(Tagged("type", variants, unsupported=NOT_METERED), min_items=1))


def _assistant_says_something(message: dict, path: str) -> None:
    if message.get("content") is None and not message.get("tool_calls"):
        raise InvalidRequest(
            f"Missing required parameter: '{path}.content' (an assistant message without tool calls needs it).",
            path,
            "missing_required_parameter",
        )


CUSTOM_TOOLS = {"custom": "custom tools (free-form input) are not offered here."}
FUNCTION_CALL = Object({"name": String(), "arguments": String()}, required=["name", "arguments"])
TOOL_CALL = Tagged(
    "type",
    {
        "function": Object(
            {"id": String(), "type": _kind("function"), "function": FUNCTION_CALL}, required=["id", "function"]
        )
    },
    unsupported=CUSTOM_TOOLS,
)
MESSAGE_NAME = String(max_length=256)
TEXT_CONTENT = _content(TEXT_PART)
MESSAGE = Tagged(
    "role",
    {
        "system": Object(
            {"role": _kind("system"), "content": TEXT_CONTENT, "name": MESSAGE_NAME}, required=["content"]
        ),
        "developer": Object(
            {"role": _kind("developer"), "content": TEXT_CONTENT, "name": MESSAGE_NAME}, required=["content"]
        ),
        "user": Object(
            {"role": _kind("user"), "content": _content(TEXT_PART, IMAGE_PART), "name": MESSAGE_NAME},
            required=["content"],
        ),
        "assistant": Object(
            {
                "role": _kind("assistant"),
                "content": _content(TEXT_PART, REFUSAL_PART),
                "name": MESSAGE_NAME,
                "refusal": String(),
                "tool_calls": Array(TOOL_CALL, min_items=1),
            },
            nullable=["content"],
            rule=_assistant_says_something,
        ),
        "tool": Object(
            {"role": _kind("tool"), "content": TEXT_CONTENT, "tool_call_id": String(min_length=1)},
            required=["content", "tool_call_id"],
        ),
    },
    unsupported={"function": "the functions API is deprecated: send tools, and 'tool' messages."},
)

FUNCTION = Object(
    {"name": NAME, "description": String(), "parameters": FreeJson(), "strict": Boolean()}, required=["name"]
)
TOOL = Tagged(
    "type",
    {"function": Object({"type": _kind("function"), "function": FUNCTION}, required=["function"])},
    unsupported=CUSTOM_TOOLS,
)
NAMED_FUNCTION = Object(
    {"type": _kind("function"), "function": Object({"name": NAME}, required=["name"])}, required=["function"]
)
TOOL_CHOICE = OneOf(
    String(choices=["none", "auto", "required"]),
    Tagged(
        "type",
        {
            "function": NAMED_FUNCTION,
            "allowed_tools": Object(
                {
                    "type": _kind("allowed_tools"),
                    "allowed_tools": Object(
                        {
                            "mode": String(choices=["auto", "required"]),
                            "tools": Array(Tagged("type", {"function": NAMED_FUNCTION}), max_items=128),
                        },
                        required=["mode", "tools"],
                    ),
                },
                required=["allowed_tools"],
            ),
        },
        unsupported=CUSTOM_TOOLS,
    ),
)
RESPONSE_FORMAT = Tagged(
    "type",
    {
        "text": Object({"type": _kind("text")}),
        "json_object": Object({"type": _kind("json_object")}),
        "json_schema": Object(
            {
                "type": _kind("json_schema"),
                "json_schema": Object(
                    {"name": NAME, "description": String(), "schema": FreeJson(), "strict": Boolean()},
                    required=["name"],
                ),
            },
            required=["json_schema"],
        ),
    },
)


def _options_agree(body: dict, path: str) -> None:
    if "stream_options" in body and body.get("stream") is not True:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", "stream_options")
    if "top_logprobs" in body and body.get("logprobs") is not True:
        raise InvalidRequest("'top_logprobs' is only allowed when 'logprobs' is true.", "top_logprobs")


# The fields whose value this site sets itself, from the app's.
HANDLED = ("model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options")
UNSUPPORTED = {
    "audio": "audio output is priced apart from text, and this site meters text.",
    "prediction": "rejected predicted tokens are billed beyond the token limit, so a call could not be bounded.",
    "web_search_options": "web searches are billed per search, which this site cannot meter.",
    "logit_bias": "token ids differ between the tokenizers of this site's models.",
    "functions": "deprecated: send 'tools'.",
    "function_call": "deprecated: send 'tool_choice'.",
}
DROPPED = (
    "user", "metadata", "store", "service_tier", "safety_identifier",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
)  # fmt: skip
CHAT_BODY = Object(
    {
        "model": String(
            min_length=1, max_length=256, pattern=r"[^\x00-\x1f\x7f]+", shape="a model id without control characters"
        ),
        "messages": Array(MESSAGE, min_items=1),
        "max_tokens": Integer(1),
        "max_completion_tokens": Integer(1),
        "stream": Boolean(),
        "stream_options": Object({"include_usage": Boolean(), "include_obfuscation": Boolean()}),
        "temperature": Number(0, 2),
        "top_p": Number(0, 1),
        "presence_penalty": Number(-2, 2),
        "frequency_penalty": Number(-2, 2),
        "stop": OneOf(String(), Array(String(), max_items=4)),
        "seed": Integer(-(2**63), 2**63 - 1),
        "n": Integer(1, 1, message="Only n=1 is supported."),
        "tools": Array(TOOL, max_items=128),
        "tool_choice": TOOL_CHOICE,
        "parallel_tool_calls": Boolean(),
        "response_format": RESPONSE_FORMAT,
        "reasoning_effort": String(choices=["none", "minimal", "low", "medium", "high", "xhigh", "max"]),
        "verbosity": String(choices=["low", "medium", "high"]),
        "logprobs": Boolean(),
        "top_logprobs": Integer(0, 20),
        "modalities": Array(String(choices=["text"]), min_items=1),
    },
    required=["model", "messages"],
    dropped=DROPPED,
    unsupported=UNSUPPORTED,
    rule=_options_agree,
)


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    options: dict = field(default_factory=dict)
    # Where each image part is ("messages[0].content[1]"), for the error when the model takes none.
    image_params: list[str] = field(default_factory=list)


def _image_params(messages: list[dict]) -> list[str]:
    return [
        f"messages[{m}].content[{p}]"
        for m, message in enumerate(messages)
        if isinstance(message.get("content"), list)
        for p, part in enumerate(message["content"])
        if part["type"] == "image_url"
    ]


def chat_request_parse(body) -> ChatRequest:
    """The request as checked against CHAT_BODY; InvalidRequest names what does not fit."""
    checked = schema_check(CHAT_BODY, body)
    max_tokens = checked.get("max_completion_tokens", checked.get("max_tokens"))
    return ChatRequest(
        model=checked["model"],
        messages=checked["messages"],
        max_tokens=max_tokens,
        stream=checked.get("stream", False),
        include_usage=checked.get("stream_options", {}).get("include_usage", False),
        options={name: value for name, value in checked.items() if name not in HANDLED},
        image_params=_image_params(checked["messages"]),
    )
