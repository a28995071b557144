"""A Responses API request, checked against its declared shape and translated into the Chat Completions
request that serves it.

Every catalog model speaks Chat Completions (the local llama.cpp server speaks
nothing else), so POST /v1/responses is served by translation, not
forwarding: `instructions` and `input` become messages (input_image parts
image_url parts, function_call items an assistant's tool calls,
function_call_output items tool messages), function tools and tool choices
their Chat Completions forms, `text.format` a response format,
`reasoning.effort` reasoning_effort.

RESPONSES_BODY declares every field to every level of nesting
(gateway/schema.py checks it). What translation cannot honour is refused with
a 400 that says so (REFUSED): state kept between calls (this site stores no
responses), background runs, extra output data; OpenAI's built-in tools are
refused by name. OpenAI's bookkeeping fields are dropped; anything else is
"Unrecognized request argument supplied".
"""

from dataclasses import dataclass, field

from gateway.chat_request import CHAT_BODY, DROPPED, IMAGE_DETAILS, NAME, NOT_METERED
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
    Spec,
    String,
    Tagged,
    schema_check,
)


def _kind(name: str) -> String:
    return String(choices=[name])


STATUS = String(choices=["in_progress", "completed", "incomplete"])
INPUT_TEXT = Object({"type": _kind("input_text"), "text": String()}, required=["type", "text"])
# Output text comes back from an earlier response with its annotations and logprobs: checked, not sent on.
OUTPUT_TEXT = Object(
    {"type": _kind("output_text"), "text": String(), "annotations": Array(FreeJson()), "logprobs": Array(FreeJson())},
    required=["type", "text"],
)
REFUSAL = Object({"type": _kind("refusal"), "refusal": String()}, required=["type", "refusal"])
INPUT_IMAGE = Object(
    {"type": _kind("input_image"), "image_url": ImageUrl(), "detail": String(choices=IMAGE_DETAILS)},
    required=["type", "image_url"],
    unsupported={"file_id": "uploaded files are not available here: send the image as image_url."},
)
NOT_METERED_INPUTS = {"input_audio": NOT_METERED["input_audio"], "input_file": NOT_METERED["file"]}


def _content(*parts: Object) -> OneOf:
    variants = {part.fields["type"].choices[0]: part for part in parts}
    return OneOf(String(), Array(Tagged("type", variants, unsupported=NOT_METERED_INPUTS), min_items=1))


def _message(role: str, content: OneOf) -> Object:
    # Output messages of an earlier response come back with their id, status and phase.
    return Object(
        {"type": _kind("message"), "role": _kind(role), "content": content, "id": String(), "status": STATUS,
         "phase": String(choices=["commentary", "final_answer"])},
        required=["content"],
    )  # fmt: skip


MESSAGE = Tagged(
    "role",
    {
        "user": _message("user", _content(INPUT_TEXT, INPUT_IMAGE)),
        "system": _message("system", _content(INPUT_TEXT)),
        "developer": _message("developer", _content(INPUT_TEXT)),
        "assistant": _message("assistant", _content(OUTPUT_TEXT, REFUSAL, INPUT_TEXT)),
    },
)
FUNCTION_CALL = Object(
    {"type": _kind("function_call"), "id": String(), "call_id": String(min_length=1), "name": NAME,
     "arguments": String(), "status": STATUS},
    required=["call_id", "name", "arguments"],
)  # fmt: skip
FUNCTION_CALL_OUTPUT = Object(
    {"type": _kind("function_call_output"), "id": String(), "call_id": String(min_length=1),
     "output": _content(INPUT_TEXT), "status": STATUS},
    required=["call_id", "output"],
)  # fmt: skip
STATEFUL = "this site does not store responses: send the whole conversation in 'input', earlier output items included."
BUILT_IN = "OpenAI's built-in tools are not available here; only function tools are."
BUILT_IN_TOOLS = (
    "web_search", "web_search_preview", "file_search", "code_interpreter", "computer_use_preview",
    "image_generation", "mcp", "local_shell", "shell", "apply_patch", "custom",
)  # fmt: skip
ITEM = Tagged(
    "type",
    {"message": MESSAGE, "function_call": FUNCTION_CALL, "function_call_output": FUNCTION_CALL_OUTPUT},
    unsupported={"item_reference": STATEFUL, "reasoning": "reasoning items are not kept between calls here."}
    | {f"{tool}_call": BUILT_IN for tool in BUILT_IN_TOOLS},
)


class InputItem(Spec):
    """An item of `input`: a message may leave its type out (`{"role": "user", "content": "Hi"}`)."""

    expected = "an object"

    def takes_type_of(self, value):
        return isinstance(value, dict)

    def check(self, value, path):
        if isinstance(value, dict) and "type" not in value:
            value = value | {"type": "message"}
        return ITEM.check(value, path)


TOOL = Tagged(
    "type",
    {
        "function": Object(
            {"type": _kind("function"), "name": NAME, "description": String(), "parameters": FreeJson(),
             "strict": Boolean()},
            required=["name"],
        )
    },
    unsupported={tool: BUILT_IN for tool in BUILT_IN_TOOLS},
)  # fmt: skip
TOOL_CHOICE = OneOf(
    String(choices=["none", "auto", "required"]),
    Tagged("type", {"function": Object({"type": _kind("function"), "name": NAME}, required=["name"])}),
)
TEXT = Object(
    {
        "format": Tagged(
            "type",
            {
                "text": Object({"type": _kind("text")}),
                "json_object": Object({"type": _kind("json_object")}),
                "json_schema": Object(
                    {"type": _kind("json_schema"), "name": NAME, "schema": FreeJson(), "description": String(),
                     "strict": Boolean()},
                    required=["name", "schema"],
                ),
            },
        ),
        "verbosity": CHAT_BODY.fields["verbosity"],
    }
)  # fmt: skip
SUMMARIES = ["auto", "concise", "detailed"]
# A summary cannot be honoured through Chat Completions, which returns none; OpenAI does not promise one
# either (not every model writes them), so asking for one is not refused.
REASONING = Object(
    {
        "effort": CHAT_BODY.fields["reasoning_effort"],
        "summary": String(choices=SUMMARIES),
        "generate_summary": String(choices=SUMMARIES),
    }
)
# Fields that ask for what translation onto Chat Completions cannot give; null, false and [] ask for nothing.
REFUSED = {
    "previous_response_id": STATEFUL,
    "conversation": STATEFUL,
    "store": STATEFUL + " Send store: false, or leave it out.",
    "background": "background responses are not supported: stream the response instead.",
    "prompt": "stored prompt templates are not available here: send the prompt in 'input'.",
    "include": "no extra output data is available here.",
}


def _honourable(body: dict, path: str) -> None:
    for name, reason in REFUSED.items():
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported by this site: {reason}", name, "unsupported_parameter")
    if "stream_options" in body and body.get("stream") is not True:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", "stream_options")


RESPONSES_BODY = Object(
    {
        "model": CHAT_BODY.fields["model"],
        "input": OneOf(String(), Array(InputItem(), min_items=1)),
        "instructions": String(),
        "max_output_tokens": Integer(1),
        "stream": Boolean(),
        # The events are never obfuscated here: nothing pads their length.
        "stream_options": Object({"include_obfuscation": Boolean()}),
        "temperature": Number(0, 2),
        "top_p": Number(0, 1),
        "parallel_tool_calls": Boolean(),
        "tools": Array(TOOL, max_items=128),
        "tool_choice": TOOL_CHOICE,
        "text": TEXT,
        "reasoning": REASONING,
        "truncation": String(choices=["disabled"]),
        "previous_response_id": String(),
        "conversation": OneOf(String(), FreeJson()),
        "store": Boolean(),
        "background": Boolean(),
        "prompt": FreeJson(),
        "include": Array(String()),
    },
    required=["model", "input"],
    dropped=DROPPED,
    rule=_honourable,
)
# Repeated in the Response object as the request gave them, or as OpenAI's defaults.
ECHOED = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "temperature": 1.0,
    "top_p": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "text": {"format": {"type": "text"}},
    "reasoning": {"effort": None, "summary": None},
}


@dataclass
class ResponsesRequest:
    model: str
    messages: list[dict]  # the Chat Completions messages that carry `instructions` and `input`
    max_tokens: int | None
    stream: bool
    chat_options: dict = field(default_factory=dict)  # forwarded to Chat Completions besides the messages
    echoed: dict = field(default_factory=dict)  # the request's settings, as the Response object repeats them
    # Where each image part is ("input[0].content[1]"), for the error when the model takes none.
    image_params: list[str] = field(default_factory=list)


def _chat_content(content: str | list[dict]) -> str | list[dict]:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part["type"] == "input_image":
            image = {"url": part["image_url"]} | ({"detail": part["detail"]} if "detail" in part else {})
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.get("text", part.get("refusal"))})
    return parts


def _messages(checked: dict) -> tuple[list[dict], list[str]]:
    """`instructions` and `input` as Chat Completions messages, and where in `input` the images are.

    Function calls of one turn join the assistant message before them (or a
    new one), as Chat Completions wants a turn's tool calls in one message.
    """
    messages = [{"role": "system", "content": checked["instructions"]}] if "instructions" in checked else []
    items, images = checked["input"], []
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}], images
    for index, item in enumerate(items):
        if item["type"] == "message":
            parts = item["content"] if isinstance(item["content"], list) else []
            images += [f"input[{index}].content[{n}]" for n, part in enumerate(parts) if part["type"] == "input_image"]
            messages.append({"role": item["role"], "content": _chat_content(item["content"])})
        elif item["type"] == "function_call":
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": None}
                messages.append(last)
            function = {"name": item["name"], "arguments": item["arguments"]}
            last.setdefault("tool_calls", []).append({"id": item["call_id"], "type": "function", "function": function})
        else:  # function_call_output
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _chat_content(item["output"])})
    return messages, images


def _function(tool: dict) -> dict:
    return {"type": "function", "function": {name: value for name, value in tool.items() if name != "type"}}


def _chat_options(checked: dict) -> dict:
    """The Chat Completions fields that carry the request's options."""
    options = {name: checked[name] for name in ("temperature", "top_p", "parallel_tool_calls") if name in checked}
    if checked.get("tools"):
        options["tools"] = [_function(tool) for tool in checked["tools"]]
    if isinstance(choice := checked.get("tool_choice"), dict):
        options["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        options["tool_choice"] = choice
    text = checked.get("text", {})
    if "verbosity" in text:
        options["verbosity"] = text["verbosity"]
    format = text.get("format", {"type": "text"})
    if format["type"] == "json_schema":
        schema = {name: value for name, value in format.items() if name != "type"}
        options["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif format["type"] == "json_object":
        options["response_format"] = {"type": "json_object"}
    if "effort" in checked.get("reasoning", {}):
        options["reasoning_effort"] = checked["reasoning"]["effort"]
    return options


def responses_request_parse(body) -> ResponsesRequest:
    """The request as checked against RESPONSES_BODY, translated; InvalidRequest names what does not fit."""
    checked = schema_check(RESPONSES_BODY, body)
    messages, images = _messages(checked)
    return ResponsesRequest(
        model=checked["model"],
        messages=messages,
        max_tokens=checked.get("max_output_tokens"),
        stream=checked.get("stream", False),
        chat_options=_chat_options(checked),
        echoed={name: checked.get(name, default) for name, default in ECHOED.items()},
        image_params=images,
    )
