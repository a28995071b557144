"""Checking a Chat Completions request from an app before anything of it goes upstream.

The rule for fields: those below are checked and forwarded; a few that only
concern OpenAI's own bookkeeping are dropped; anything else is refused with
OpenAI's own wording, so nothing unknown is ever passed on blindly.
"""

from dataclasses import dataclass, field

from gateway.errors import ApiError


class InvalidRequest(ApiError):
    """A request refused for its body: OpenAI's 400 naming the field at fault."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(400, message, param=param, code=code)


def _number(low: float, high: float):
    def check(name, value):
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise InvalidRequest(f"'{name}' must be a number from {low:g} to {high:g}.", name)
        return value

    return check


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a whole number of at least 1.", name)
    return value


def _int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be a whole number.", name)
    return value


def _bool(name, value):
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be true or false.", name)
    return value


def _stop(name, value):
    if isinstance(value, str) or (
        isinstance(value, list) and len(value) <= 4 and all(isinstance(s, str) for s in value)
    ):
        return value
    raise InvalidRequest("'stop' must be a string or a list of at most 4 strings.", name)


def _tools(name, value):
    if not isinstance(value, list) or not all(
        isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)
        for tool in value
    ):
        raise InvalidRequest('\'tools\' must be a list of {"type": "function", "function": {...}} objects.', name)
    return value


def _tool_choice(name, value):
    if value in ("none", "auto", "required") or (isinstance(value, dict) and value.get("type") == "function"):
        return value
    raise InvalidRequest("'tool_choice' must be none, auto, required or a function choice.", name)


def _response_format(name, value):
    if isinstance(value, dict) and value.get("type") in ("text", "json_object", "json_schema"):
        return value
    raise InvalidRequest("'response_format' must have type text, json_object or json_schema.", name)


def _n(name, value):
    if value != 1:
        raise InvalidRequest("Only n=1 is supported.", name)
    return value


FORWARDED = {
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "stop": _stop,
    "seed": _int,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _bool,
    "response_format": _response_format,
    "n": _n,
}
# About OpenAI's own records of the call, meaningless to another upstream.
DROPPED = {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options"}

ROLES = {"system", "developer", "user", "assistant", "tool"}
MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal"}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    max_tokens: int | None
    stream: bool
    include_usage: bool
    options: dict = field(default_factory=dict)

    def prompt_text(self) -> list[dict]:
        """The messages as plain text, for estimating the prompt's tokens."""
        return [{"content": _text_of(m.get("content")) + str(m.get("tool_calls") or "")} for m in self.messages]


def _text_of(content) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content or ""


def _check_message(index: int, message) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{where}' must be an object.", where)
    if message.get("role") not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.", f"{where}.role")
    for key in message:
        if key not in MESSAGE_KEYS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {where}.{key}", f"{where}.{key}")
    content = message.get("content")
    if isinstance(content, list):
        for n, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"'{where}.content[{n}]': only text content parts are supported.", f"{where}.content[{n}]"
                )
    elif content is None:
        if not (message["role"] == "assistant" and message.get("tool_calls")):
            raise InvalidRequest(f"'{where}.content' is required.", f"{where}.content")
    elif not isinstance(content, str):
        raise InvalidRequest(f"'{where}.content' must be a string or a list of content parts.", f"{where}.content")
    return message


def chat_request_parse(body) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in body:
        if name not in FORWARDED and name not in DROPPED and name not in HANDLED:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("You must provide a model parameter.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list.", "messages")
    messages = [_check_message(index, message) for index, message in enumerate(messages)]
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            max_tokens = _positive_int(name, body[name])
            break
    stream = _bool("stream", body["stream"]) if body.get("stream") is not None else False
    include_usage = False
    if body.get("stream_options") is not None:
        options = body["stream_options"]
        if not stream:
            raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise InvalidRequest("'stream_options' may only contain include_usage.", "stream_options")
        include_usage = _bool("stream_options.include_usage", options.get("include_usage", False))
    forwarded = {name: check(name, body[name]) for name, check in FORWARDED.items() if body.get(name) is not None}
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=stream,
        include_usage=include_usage,
        options=forwarded,
    )
