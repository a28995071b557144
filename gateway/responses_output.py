"""A Chat Completions answer told as the Responses API tells it: a Response object, or its typed stream events.

The text of the reply is one `message` output item with one `output_text`
part; each tool call is a `function_call` item after it. Streamed, each item
is opened (output_item.added), filled (deltas) and closed (…done) in turn,
between response.created / response.in_progress and response.completed
(response.incomplete when max_output_tokens cut it, response.failed when the
provider failed mid-way). Every event carries its sequence_number.
"""

import json
import time
import uuid

from conversations.llm import UpstreamError

# How the Responses API names a Chat Completions finish reason that cut the reply short.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def response_usage(usage: dict | None) -> dict | None:
    """Chat Completions usage as the Responses API words it."""
    if not usage:
        return None
    input_tokens, output_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(model_id: str, echoed: dict) -> dict:
    """A Response in progress, with nothing output yet; its settings as the request gave them."""
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model_id,
        "output": [],
        "previous_response_id": None,
        "store": False,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
        **echoed,
    }


def _ended(response: dict, output: list[dict], finish_reason: str | None, usage: dict | None) -> dict:
    reason = INCOMPLETE_REASONS.get(finish_reason or "")
    ended = {"status": "incomplete" if reason else "completed", "output": output, "usage": response_usage(usage)}
    if reason:
        ended["incomplete_details"] = {"reason": reason}
    else:
        ended["completed_at"] = int(time.time())
    return response | ended


def _message_item(text: str, status: str) -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": _id("msg"), "type": "message", "status": status, "role": "assistant", "content": [part]}


def _function_call_item(call: dict, status: str) -> dict:
    function = call.get("function") or {}
    return {
        "id": _id("fc"),
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or _id("call"),
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
    }


def response_from_completion(response: dict, completion: dict) -> dict:
    """The finished Response for a (not streamed) chat.completion."""
    choice = completion["choices"][0]
    message = choice["message"]
    status = "incomplete" if choice.get("finish_reason") in INCOMPLETE_REASONS else "completed"
    output = [_message_item(message["content"], status)] if message.get("content") else []
    output += [_function_call_item(call, status) for call in message.get("tool_calls") or []]
    return _ended(response, output, choice.get("finish_reason"), completion.get("usage"))


class ResponseEvents:
    """The stream events of one Response, from the chat.completion.chunk objects that make it.

    Each method returns the bytes to send (several SSE events, or none).
    """

    def __init__(self, response: dict):
        self.response = response
        self.sequence_number = 0
        self.output: list[dict] = []  # items closed so far
        self.item: dict | None = None  # the item being filled
        self.tool_call_index: int | None = None  # which of the chunks' tool calls fills it
        self.usage: dict | None = None

    def _event(self, type: str, **fields) -> bytes:
        event = {"type": type, "sequence_number": self.sequence_number, **fields}
        self.sequence_number += 1
        return f"event: {type}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()

    def _where(self) -> dict:
        return {"item_id": self.item["id"], "output_index": len(self.output)}

    def opening(self) -> bytes:
        return self._event("response.created", response=self.response) + self._event(
            "response.in_progress", response=self.response
        )

    def take(self, chunk: dict) -> bytes:
        """The events of one chat.completion.chunk: text deltas, tool calls begun or continued."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if not chunk.get("choices"):
            return b""
        delta = chunk["choices"][0].get("delta") or {}
        events = b""
        if text := delta.get("content"):
            if self.item is None or self.item["type"] != "message":
                events += self._close() + self._open_message()
            self.item["content"][0]["text"] += text
            events += self._event(
                "response.output_text.delta", **self._where(), content_index=0, delta=text, logprobs=[]
            )
        for call in delta.get("tool_calls") or []:
            if self.item is None or self.item["type"] != "function_call" or call.get("index") != self.tool_call_index:
                events += self._close() + self._open_function_call(call)
            if arguments := (call.get("function") or {}).get("arguments"):
                self.item["arguments"] += arguments
                events += self._event("response.function_call_arguments.delta", **self._where(), delta=arguments)
        return events

    def _open_message(self) -> bytes:
        self.item = _message_item("", "in_progress")
        item = self.item | {"content": []}
        part = self.item["content"][0] | {"text": ""}
        return self._event("response.output_item.added", output_index=len(self.output), item=item) + self._event(
            "response.content_part.added", **self._where(), content_index=0, part=part
        )

    def _open_function_call(self, call: dict) -> bytes:
        self.item = _function_call_item(call, "in_progress") | {"arguments": ""}  # take() adds the first ones
        self.tool_call_index = call.get("index")
        return self._event("response.output_item.added", output_index=len(self.output), item=dict(self.item))

    def _close(self, status: str = "completed") -> bytes:
        """The events that close the item being filled, if there is one."""
        if self.item is None:
            return b""
        item, where = self.item, self._where()
        item["status"] = status
        if item["type"] == "message":
            part = item["content"][0]
            events = self._event("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[])
            events += self._event("response.content_part.done", **where, content_index=0, part=part)
        else:
            events = self._event(
                "response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"]
            )
        events += self._event("response.output_item.done", output_index=where["output_index"], item=item)
        self.output.append(item)
        self.item = None
        return events

    def closing(self, finish_reason: str | None) -> bytes:
        """The last events of a reply that ended: its items closed, then the finished Response."""
        status = "incomplete" if finish_reason in INCOMPLETE_REASONS else "completed"
        events = self._close(status)
        ended = _ended(self.response, self.output, finish_reason, self.usage)
        return events + self._event(f"response.{ended['status']}", response=ended)

    def failed(self, error: UpstreamError) -> bytes:
        """The last event of a reply the provider broke off: the Response, failed, with what it said."""
        if self.item is not None:
            self.output.append(self.item | {"status": "incomplete"})
        code = "rate_limit_exceeded" if error.code == "rate_limited" else "server_error"
        failed = self.response | {
            "status": "failed",
            "output": self.output,
            "error": {"code": code, "message": error.user_message},
            "usage": response_usage(self.usage),
        }
        return self._event("response.failed", response=failed)

    def text_so_far(self) -> str:
        """Everything generated so far (text and tool call arguments), to estimate a reply cut short."""
        items = [*self.output, *([self.item] if self.item else [])]
        return "".join(item["content"][0]["text"] if item["type"] == "message" else item["arguments"] for item in items)
