"""A Responses API request, checked and translated into the Chat Completions request that serves it.

Every catalog model speaks Chat Completions (the local llama.cpp server speaks
nothing else), so POST /v1/responses is served by translation, not
forwarding: `input` and `instructions` become messages, function tools and
tool choices their Chat Completions forms, `text.format` a response format,
`reasoning.effort` reasoning_effort. What translation cannot honour is refused
with a 400 that says so: state kept between calls (this site stores no
responses, so `previous_response_id`, `conversation` and `store: true`),
background runs, OpenAI's built-in tools. OpenAI's bookkeeping fields are
dropped; anything else is refused, so nothing unknown goes upstream.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.chat_request import InvalidRequest, _bool, _number, _positive_int

# Asked of OpenAI alone, about its own records of the call: meaningless to another upstream.
DROPPED = {"user", "metadata", "service_tier", "safety_identifier", "prompt_cache_key", "prompt_cache_retention"}
STATEFUL = (
    "This site does not store responses: send the whole conversation in 'input' "
    "(with the earlier output items) instead of '{name}'."
)
REFUSED = {
    "previous_response_id": STATEFUL.format(name="previous_response_id"),
    "conversation": STATEFUL.format(name="conversation"),
    "background": "Background responses are not supported here: leave 'background' out, or stream.",
    "prompt": "Stored prompt templates are not available here: send the prompt in 'input'.",
    "include": "'include' is not supported here: no extra output data is available.",
}

ROLES = {"user", "system", "developer", "assistant"}
REASONING_EFFORTS = {"none", "minimal", "low", "medium", "high", "xhigh"}
REASONING_SUMMARIES = {"auto", "concise", "detailed"}
VERBOSITIES = {"low", "medium", "high"}


@dataclass
class ResponsesRequest:
    model: str
    messages: list[dict]  # the Chat Completions messages that carry `instructions` and `input`
    max_tokens: int | None
    stream: bool
    chat_options: dict = field(default_factory=dict)  # forwarded to Chat Completions besides the messages
    echoed: dict = field(default_factory=dict)  # the request's settings, as the Response object repeats them


def _object(where: str, value, keys: set[str], required: set[str] = frozenset()) -> dict:
    """`value` as an object with only `keys`, and the `required` ones present."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be an object.", where)
    for key in value:
        if key not in keys:
            raise InvalidRequest(f"Unrecognized request argument supplied: {where}.{key}", f"{where}.{key}")
    for key in required:
        if key not in value:
            raise InvalidRequest(f"Missing required parameter: '{where}.{key}'.", f"{where}.{key}")
    return value


def _string(where: str, value, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise InvalidRequest(f"'{where}' must be a {'' if empty else 'non-empty '}string.", where)
    return value


def _json_schema(where: str, value) -> dict:
    """A JSON Schema, passed on whole as Chat Completions takes it too: the provider checks its keywords."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be a JSON Schema object.", where)
    return value


def _optional_string(where: str, value) -> str | None:
    return None if value is None else _string(where, value)


def _one_of(where: str, value, allowed: set[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(f"'{where}' must be one of {', '.join(sorted(allowed))}.", where)
    return value


# -- input ----------------------------------------------------------------------------------


def _content(where: str, content, role: str) -> str | list[dict]:
    """A message's content: a string as it is, text parts as Chat Completions text parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or a list of content parts.", where)
    parts = []
    for n, part in enumerate(content):
        at = f"{where}[{n}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_image":
            raise InvalidRequest(f"'{at}': image inputs are not supported here yet; send text.", at)
        if kind == "refusal" and role == "assistant":
            _object(at, part, {"type", "refusal"}, {"refusal"})
            parts.append({"type": "text", "text": _string(f"{at}.refusal", part["refusal"])})
            continue
        if kind not in ("input_text", "output_text"):
            raise InvalidRequest(f"'{at}.type' must be input_text or output_text.", f"{at}.type")
        # Output text comes back from an earlier response with its annotations and logprobs; they are not sent on.
        _object(at, part, {"type", "text", "annotations", "logprobs"}, {"text"})
        parts.append({"type": "text", "text": _string(f"{at}.text", part["text"])})
    return parts


def _message(where: str, item: dict) -> dict:
    # Output messages of an earlier response come back with their id, status and phase.
    _object(where, item, {"type", "role", "content", "id", "status", "phase"}, {"role", "content"})
    role = _one_of(f"{where}.role", item["role"], ROLES)
    return {"role": role, "content": _content(f"{where}.content", item["content"], role)}


def _function_call(where: str, item: dict) -> dict:
    _object(where, item, {"type", "id", "call_id", "name", "arguments", "status"}, {"call_id", "name", "arguments"})
    return {
        "id": _string(f"{where}.call_id", item["call_id"], empty=False),
        "type": "function",
        "function": {
            "name": _string(f"{where}.name", item["name"], empty=False),
            "arguments": _string(f"{where}.arguments", item["arguments"]),
        },
    }


def _function_call_output(where: str, item: dict) -> dict:
    _object(where, item, {"type", "id", "call_id", "output", "status"}, {"call_id", "output"})
    output = item["output"]
    if not isinstance(output, str):
        output = _content(f"{where}.output", output, "tool")
    return {
        "role": "tool",
        "tool_call_id": _string(f"{where}.call_id", item["call_id"], empty=False),
        "content": output,
    }


def _messages(body: dict) -> list[dict]:
    """`instructions` and `input` as Chat Completions messages.

    Function calls of one turn join the assistant message before them (or a
    new one), as Chat Completions wants a turn's tool calls in one message.
    """
    messages = []
    if (instructions := body.get("instructions")) is not None:
        messages.append({"role": "system", "content": _string("instructions", instructions)})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise InvalidRequest("'input' must be a string or a non-empty list of input items.", "input")
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(where, item))
        elif kind == "function_call":
            call = _function_call(where, item)
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant":
                last = {"role": "assistant", "content": None}
                messages.append(last)
            last.setdefault("tool_calls", []).append(call)
        elif kind == "function_call_output":
            messages.append(_function_call_output(where, item))
        elif kind == "item_reference":
            raise InvalidRequest(f"'{where}': {STATEFUL.format(name='item_reference')}", where)
        else:
            raise InvalidRequest(
                f"'{where}.type' must be message, function_call or function_call_output "
                "(this site serves function tools only).",
                f"{where}.type",
            )
    return messages


# -- options ----------------------------------------------------------------------------------


def _tools(name: str, tools) -> list[dict]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be a list of function tools.", name)
    chat_tools = []
    for n, tool in enumerate(tools):
        where = f"tools[{n}]"
        if isinstance(tool, dict) and tool.get("type") != "function":
            raise InvalidRequest(
                f"'{where}': the built-in tool {tool.get('type')!r} is not available here; only function tools are.",
                f"{where}.type",
            )
        _object(where, tool, {"type", "name", "description", "parameters", "strict"}, {"name"})
        function = {"name": _string(f"{where}.name", tool["name"], empty=False)}
        if (description := _optional_string(f"{where}.description", tool.get("description"))) is not None:
            function["description"] = description
        if (parameters := tool.get("parameters")) is not None:
            function["parameters"] = _json_schema(f"{where}.parameters", parameters)
        if tool.get("strict") is not None:
            function["strict"] = _bool(f"{where}.strict", tool["strict"])
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _tool_choice(name: str, choice) -> str | dict:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        _object(name, choice, {"type", "name"}, {"name"})
        return {"type": "function", "function": {"name": _string(f"{name}.name", choice["name"], empty=False)}}
    raise InvalidRequest('\'tool_choice\' must be none, auto, required or {"type": "function", "name": ...}.', name)


def _text(name: str, text) -> dict:
    """`text.format` as response_format, and `text.verbosity` as verbosity."""
    _object(name, text, {"format", "verbosity"})
    options = {}
    if (verbosity := text.get("verbosity")) is not None:
        options["verbosity"] = _one_of(f"{name}.verbosity", verbosity, VERBOSITIES)
    if (format := text.get("format")) is None:
        return options
    where = f"{name}.format"
    kind = _one_of(
        f"{where}.type",
        format.get("type") if isinstance(format, dict) else None,
        {"text", "json_object", "json_schema"},
    )
    if kind == "json_schema":
        _object(where, format, {"type", "name", "schema", "description", "strict"}, {"name", "schema"})
        schema = {
            "name": _string(f"{where}.name", format["name"], empty=False),
            "schema": _json_schema(f"{where}.schema", format["schema"]),
        }
        if (description := _optional_string(f"{where}.description", format.get("description"))) is not None:
            schema["description"] = description
        if format.get("strict") is not None:
            schema["strict"] = _bool(f"{where}.strict", format["strict"])
        return options | {"response_format": {"type": "json_schema", "json_schema": schema}}
    _object(where, format, {"type"})
    return options if kind == "text" else options | {"response_format": {"type": "json_object"}}


def _reasoning(name: str, reasoning) -> dict:
    # A summary cannot be honoured through Chat Completions, which returns none; OpenAI does not
    # promise one either (not every model writes them), so asking for it is not refused.
    _object(name, reasoning, {"effort", "summary", "generate_summary"})
    for key in ("summary", "generate_summary"):
        if reasoning.get(key) is not None:
            _one_of(f"{name}.{key}", reasoning[key], REASONING_SUMMARIES)
    if (effort := reasoning.get("effort")) is None:
        return {}
    return {"reasoning_effort": _one_of(f"{name}.effort", effort, REASONING_EFFORTS)}


def _forwarded(name: str, check: Callable) -> Callable[[str, object], dict]:
    """A field forwarded to Chat Completions under the same name, after `check`."""
    return lambda _, value: {name: check(name, value)}


# Each field's check, returning the Chat Completions fields it becomes.
TRANSLATED: dict[str, Callable[[str, object], dict]] = {
    "temperature": _forwarded("temperature", _number(0, 2)),
    "top_p": _forwarded("top_p", _number(0, 1)),
    "parallel_tool_calls": _forwarded("parallel_tool_calls", _bool),
    "tools": lambda name, value: {"tools": tools} if (tools := _tools(name, value)) else {},
    "tool_choice": lambda name, value: {"tool_choice": _tool_choice(name, value)},
    "text": _text,
    "reasoning": _reasoning,
}
HANDLED = {"model", "input", "instructions", "max_output_tokens", "stream", "stream_options", "store", "truncation"}
# Repeated in the Response object as the request gave them (or as OpenAI's defaults).
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


def responses_request_parse(body) -> ResponsesRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name, value in body.items():
        if name in REFUSED and value is not None:
            raise InvalidRequest(REFUSED[name], name, code="unsupported_parameter")
        if name not in TRANSLATED and name not in HANDLED and name not in DROPPED and name not in REFUSED:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", "model")
    # OpenAI's default is true, and clients that do not say so do not rely on it; one that says so does.
    if body.get("store") is not None and _bool("store", body["store"]):
        raise InvalidRequest(STATEFUL.format(name="store: true").replace("instead of", "and leave out"), "store")
    if body.get("truncation") not in (None, "disabled"):
        raise InvalidRequest("Only truncation 'disabled' is supported: shorten 'input' yourself.", "truncation")
    messages = _messages(body)
    max_tokens = None
    if body.get("max_output_tokens") is not None:
        max_tokens = _positive_int("max_output_tokens", body["max_output_tokens"])
    stream = _bool("stream", body["stream"]) if body.get("stream") is not None else False
    if body.get("stream_options") is not None:
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        # The events are never obfuscated here (nothing is added to pad their length).
        options = _object("stream_options", body["stream_options"], {"include_obfuscation"})
        if options.get("include_obfuscation") is not None:
            _bool("stream_options.include_obfuscation", options["include_obfuscation"])
    chat_options = {}
    for name, translate in TRANSLATED.items():
        if body.get(name) is not None:
            chat_options |= translate(name, body[name])
    echoed = {name: body[name] if body.get(name) is not None else default for name, default in ECHOED.items()}
    return ResponsesRequest(
        model=model, messages=messages, max_tokens=max_tokens, stream=stream, chat_options=chat_options, echoed=echoed
    )
