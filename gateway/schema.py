"""Declared shapes of /v1 request bodies, checked to every level of nesting.

A body is checked against a tree of specs (Object, Array, String, Integer...)
that says, for every field at every depth, its JSON type, its range and what
it may contain. What comes out is what may be forwarded: a key that is not
declared is refused with OpenAI's own wording ("Unrecognized request argument
supplied: tools[0].function.foo"), so nothing unknown ever reaches a provider.
Errors name the offending path in `param`, as OpenAI's do.

    body = json_body_parse(request.body)        # InvalidRequest: not JSON, NaN, too deep...
    checked = schema_check(CHAT_BODY, body)     # InvalidRequest with message, param and code

Every string is refused if it holds an unpaired surrogate (no encoder or
database takes it); every number must be finite. Free-form JSON (a JSON Schema
in a tool's `parameters`) is forwarded as it is, bounded in depth and size.
"""

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from gateway.errors import ApiError


class InvalidRequest(ApiError):
    """A body that does not fit its declared shape: OpenAI's 400, its message, the offending path and code."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(400, message, param=param, code=code)


# Python's json module reaches its recursion limit near 1,000 levels; no request needs a tenth of that.
BODY_MAX_DEPTH = 64
NOT_JSON = "We could not parse the JSON body of your request."


def json_body_parse(raw: bytes) -> Any:
    """The JSON of a request body; InvalidRequest for anything that is not strict JSON (NaN and Infinity are not)."""

    def refuse_constant(name: str):
        raise ValueError(f"{name} is not JSON")

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):  # 1e400
            raise ValueError(f"{text} is out of range")
        return number

    try:
        body = json.loads(raw, parse_constant=refuse_constant, parse_float=finite)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(NOT_JSON) from None
    if _depth_exceeds(body, BODY_MAX_DEPTH):
        raise InvalidRequest(f"The request body is nested more than {BODY_MAX_DEPTH} levels deep.")
    return body


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` nests deeper than `limit`, found without recursion."""
    level = [value]
    for _ in range(limit):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_type(path: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{path}': expected {expected}, but got {_json_type(value)} instead.", path, "invalid_type"
    )


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


SURROGATE = re.compile("[\ud800-\udfff]")


class Spec:
    """One declared shape. `check` returns the value to forward, or raises InvalidRequest naming `path`."""

    expected = "a value"  # as OpenAI's messages put it: "expected a string"

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def takes_type_of(self, value: Any) -> bool:
        """Whether `value` is of this spec's JSON type (what OneOf chooses by)."""
        raise NotImplementedError

    def admits(self, value: Any) -> bool:
        """Whether this spec would take the value as it is (a test's check of what was forwarded)."""
        try:
            return self.check(value, "") == value
        except InvalidRequest:
            return False


class String(Spec):
    expected = "a string"

    def takes_type_of(self, value):
        return isinstance(value, str)

    def __init__(
        self,
        *,
        choices: Iterable[str] | None = None,
        pattern: str | None = None,
        min_length: int = 0,
        max_length: int | None = None,
        shape: str = "",
    ):
        self.choices = tuple(choices) if choices is not None else None
        self.pattern = re.compile(pattern) if pattern else None
        self.min_length, self.max_length = min_length, max_length
        self.shape = shape  # the pattern in words, for the error

    def check(self, value, path):
        if not isinstance(value, str):
            raise _wrong_type(path, self.expected, value)
        if self.choices is not None and value not in self.choices:
            raise InvalidRequest(
                f"Invalid value for '{path}': '{value[:100]}'. Supported values are: {_quoted(self.choices)}.",
                path,
                "invalid_value",
            )
        if SURROGATE.search(value):
            raise InvalidRequest(f"'{path}' contains an unpaired surrogate, which is not valid Unicode text.", path)
        if len(value) < self.min_length or (self.max_length is not None and len(value) > self.max_length):
            most = f" and at most {self.max_length}" if self.max_length is not None else ""
            raise InvalidRequest(f"'{path}' must be at least {self.min_length}{most} characters long.", path)
        if self.pattern and not self.pattern.fullmatch(value):
            raise InvalidRequest(f"'{path}' must be {self.shape or 'of the form ' + self.pattern.pattern}.", path)
        return value


class Integer(Spec):
    """A whole number: `true` and `1.0` are not."""

    expected = "an integer"

    def takes_type_of(self, value):
        return isinstance(value, int) and not isinstance(value, bool)

    def __init__(self, low: int, high: int | None = None, *, message: str | None = None):
        self.low, self.high = low, high
        self.message = message  # instead of the range in words

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(path, self.expected, value)
        if value < self.low or (self.high is not None and value > self.high):
            if self.message:
                raise InvalidRequest(self.message, path, "invalid_value")
            if self.high is None:
                raise InvalidRequest(f"'{path}' must be a whole number of at least {self.low}.", path, "invalid_value")
            words = f"'{path}' must be a whole number from {self.low} to {self.high}."
            raise InvalidRequest(words, path, "invalid_value")
        return value


class Number(Spec):
    expected = "a number"

    def takes_type_of(self, value):
        return isinstance(value, int | float) and not isinstance(value, bool)

    def __init__(self, low: float, high: float):
        self.low, self.high = low, high

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(path, self.expected, value)
        if not (math.isfinite(value) and self.low <= value <= self.high):
            words = f"'{path}' must be a number from {self.low:g} to {self.high:g}."
            raise InvalidRequest(words, path, "invalid_value")
        return value


class Boolean(Spec):
    expected = "a boolean"

    def takes_type_of(self, value):
        return isinstance(value, bool)

    def check(self, value, path):
        if not isinstance(value, bool):
            raise _wrong_type(path, self.expected, value)
        return value


class Array(Spec):
    expected = "an array"

    def takes_type_of(self, value):
        return isinstance(value, list)

    def __init__(self, items: Spec, *, min_items: int = 0, max_items: int | None = None):
        self.items = items
        self.min_items, self.max_items = min_items, max_items

    def check(self, value, path):
        if not isinstance(value, list):
            raise _wrong_type(path, self.expected, value)
        if len(value) < self.min_items or (self.max_items is not None and len(value) > self.max_items):
            most = f" and at most {self.max_items}" if self.max_items is not None else ""
            raise InvalidRequest(f"'{path}' must have at least {self.min_items}{most} items.", path, "invalid_value")
        return [self.items.check(item, f"{path}[{index}]") for index, item in enumerate(value)]


def _key_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _ObjectSpec(Spec):
    expected = "an object"

    def takes_type_of(self, value):
        return isinstance(value, dict)


class Object(_ObjectSpec):
    """A JSON object with declared keys; any other key is refused.

    A key given as null counts as absent (SDKs and LangChain send nulls for
    unset options), unless it is `nullable`: then null is forwarded. `dropped`
    keys are accepted and not forwarded; `unsupported` keys are known ones this
    site refuses, each with its reason. A missing required key is reported
    against the object that lacks it. `rule` checks what involves several keys.
    """

    def __init__(
        self,
        fields: dict[str, Spec],
        *,
        required: Iterable[str] = (),
        nullable: Iterable[str] = (),
        dropped: Iterable[str] = (),
        unsupported: dict[str, str] | None = None,
        rule: Callable[[dict, str], None] | None = None,
    ):
        self.fields = fields
        self.required = tuple(required)
        self.nullable = frozenset(nullable)
        self.dropped = frozenset(dropped)
        self.unsupported = unsupported or {}
        self.rule = rule

    def check(self, value, path):
        if not isinstance(value, dict):
            raise _wrong_type(path or "body", self.expected, value)
        for key in value:
            if key in self.unsupported:
                where = _key_path(path, key)
                raise InvalidRequest(f"'{where}' is not supported by this site: {self.unsupported[key]}", where)
            if key not in self.fields and key not in self.dropped:
                where = _key_path(path, str(key)[:100])
                raise InvalidRequest(f"Unrecognized request argument supplied: {where}", where, "unknown_parameter")
        for key in self.required:
            if value.get(key) is None and not (key in self.nullable and key in value):
                raise InvalidRequest(
                    f"Missing required parameter: '{_key_path(path, key)}'.",
                    path or key,
                    "missing_required_parameter",
                )
        checked = {}
        for key, spec in self.fields.items():
            if key not in value:
                continue
            if value[key] is None:
                if key in self.nullable:
                    checked[key] = None
                continue
            checked[key] = spec.check(value[key], _key_path(path, key))
        if self.rule:
            self.rule(checked, path)
        return checked


class Tagged(_ObjectSpec):
    """An object whose shape depends on one of its keys: a message's `role`, a content part's `type`."""

    def __init__(self, tag: str, variants: dict[str, Object], *, unsupported: dict[str, str] | None = None):
        self.tag = tag
        self.variants = variants
        self.unsupported = unsupported or {}

    def check(self, value, path):
        if not isinstance(value, dict):
            raise _wrong_type(path, self.expected, value)
        tag = value.get(self.tag)
        tag_path = _key_path(path, self.tag)
        if tag is None:
            raise InvalidRequest(f"Missing required parameter: '{tag_path}'.", path, "missing_required_parameter")
        if not isinstance(tag, str):
            raise _wrong_type(tag_path, "a string", tag)
        if tag in self.unsupported:
            reason = self.unsupported[tag]
            raise InvalidRequest(f"'{tag_path}': '{tag}' is not supported by this site: {reason}", path)
        if tag not in self.variants:
            supported = _quoted(self.variants)
            raise InvalidRequest(
                f"Invalid value for '{tag_path}': '{tag[:100]}'. Supported values are: {supported}.",
                tag_path,
                "invalid_value",
            )
        return self.variants[tag].check(value, path)


class OneOf(Spec):
    """One of several shapes told apart by their JSON type: a string, or an array of parts."""

    def __init__(self, *specs: Spec):
        self.specs = specs
        self.expected = " or ".join(spec.expected for spec in specs)

    def check(self, value, path):
        for spec in self.specs:
            if spec.takes_type_of(value):
                return spec.check(value, path)
        raise _wrong_type(path, self.expected, value)


class FreeJson(_ObjectSpec):
    """Any JSON object, forwarded as it is (a JSON Schema), bounded in depth and size and JSON-clean."""

    def __init__(self, *, max_depth: int = 32, max_chars: int = 262_144):
        self.max_depth, self.max_chars = max_depth, max_chars

    def check(self, value, path):
        if not isinstance(value, dict):
            raise _wrong_type(path, self.expected, value)
        if _depth_exceeds(value, self.max_depth):
            raise InvalidRequest(f"'{path}' is nested more than {self.max_depth} levels deep.", path)
        for item in _walk(value):
            if isinstance(item, float) and not math.isfinite(item):
                raise InvalidRequest(f"'{path}' holds a number that is not finite.", path)
            if isinstance(item, str) and SURROGATE.search(item):
                raise InvalidRequest(f"'{path}' contains an unpaired surrogate, which is not valid Unicode text.", path)
        if len(json.dumps(value, ensure_ascii=False)) > self.max_chars:
            raise InvalidRequest(f"'{path}' is longer than {self.max_chars} characters of JSON.", path)
        return value


# OpenAI takes images up to 20 MB; a data URL carries them base64-encoded, 4 characters for 3 bytes.
IMAGE_DATA_MAX_BYTES = 20 * 1024 * 1024
IMAGE_URL_MAX_CHARS = 8192
DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]*={0,2})")


class ImageUrl(String):
    """Where an image is: an https URL, or the image itself as a base64 data URL of PNG, JPEG, GIF or WebP."""

    def check(self, value, path):
        super().check(value, path)
        if value.startswith("data:"):
            data = DATA_URL.fullmatch(value)
            if not data or len(data[2]) % 4:
                raise InvalidRequest(
                    f"'{path}' must be a data URL of a PNG, JPEG, GIF or WebP image in base64 "
                    "(data:image/png;base64,...).",
                    path,
                    "invalid_image_url",
                )
            if len(data[2]) // 4 * 3 > IMAGE_DATA_MAX_BYTES:
                raise InvalidRequest(
                    f"'{path}' is an image larger than {IMAGE_DATA_MAX_BYTES // 2**20} MB.", path, "image_too_large"
                )
            return value
        if not value.startswith("https://") or len(value) > IMAGE_URL_MAX_CHARS or any(c.isspace() for c in value):
            raise InvalidRequest(
                f"'{path}' must be an https URL of at most {IMAGE_URL_MAX_CHARS} characters, or a data URL.",
                path,
                "invalid_image_url",
            )
        return value


def _walk(value: Any):
    """Every value and every key inside `value`, without recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        yield item
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def schema_check(spec: Spec, body: Any) -> Any:
    """The body as it may be forwarded, or InvalidRequest for the first thing in it that does not fit `spec`."""
    if not isinstance(body, dict) and isinstance(spec, Object):
        raise InvalidRequest("The request body must be a JSON object.")
    return spec.check(body, "")
