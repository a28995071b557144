"""Hostile request bodies, made from valid ones: a fixed-seed corpus for the /v1 fuzz tests.

Each body is bytes as a client could send them: a valid body with one or a
few things broken at any depth (a wrong type, a huge or non-finite number, an
unknown key, a lone surrogate, NUL, an empty or huge string, deep nesting), or
something that is not a JSON object at all (bad UTF-8, truncated JSON, NaN,
5,000-digit numbers, arrays, strings). The same seed gives the same corpus.
"""

import copy
import json
import random
from collections.abc import Iterator

# Stand-ins replaced in the JSON text: values json.dumps cannot write.
HUGE_INTEGER = "\ue000huge-integer"
HUGE_INTEGER_TEXT = "9" * 5000


def _deep(depth: int) -> object:
    value: object = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


HOSTILE_VALUES = [
    None, True, False, 0, 1, -1, 1.0, 0.5, -2**63 - 1, 2**64, 10**300, 1e308, float("nan"), float("inf"),
    float("-inf"), HUGE_INTEGER, "", " ", "x" * 100_000, "\ud800", "a\udfffb", "nul\x00in", "\x00", "²", "١٢",
    "user", "function", "image_url", "text", "auto", "data:image/png;base64,!!!", "http://example.com/a.png",
    "https://example.com/a.png", "data:image/svg+xml;base64,PHN2Zz4=", [], [None], [[]], ["user"], [1, "a", {}],
    {}, {"role": "user"}, {"type": "text"}, {"": None}, {"\ud800": 1}, _deep(40), _deep(200), ["x"] * 2000,
]  # fmt: skip
UNKNOWN_KEYS = ["foo", "", "__proto__", "Type", "\ud800", "role ", "extra_body", "functions", "x" * 300]
HAND_PICKED = [
    b"", b" ", b"null", b"true", b"1", b'"a string"', b"[]", b"[{}]", b"{", b'{"model": "gpt-4o-mini"',
    b"\xff\xfe\xfd", b'{"model": "\xc3\x28"}', b"NaN", b'{"model": NaN}', b'{"temperature": Infinity}',
    b'{"n": -Infinity}', b"[" * 100_000, b"{" * 50_000, b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}\x00', "{}".encode("utf-16"),
    # The kinds that answered 500 before the declared schema (issue 8).
    b'{"model": "gpt-4o-mini", "messages": [{"role": ["user"], "content": "Hi"}]}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": {"user": 1}, "content": "Hi"}]}',
    b'{"model": "gpt-4o-mini\\u0000", "messages": [{"role": "user", "content": "Hi"}]}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "tools": '
    + b'[{"type": "function", "function": {"name": "f", "parameters": ' + b'{"a": ' * 900 + b"1" + b"}" * 902 + b"]}",
]  # fmt: skip


def _paths(value: object, path: tuple = ()) -> Iterator[tuple]:
    """Every place inside `value`, as the keys and indexes that lead there."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _at(value: object, path: tuple) -> object:
    for step in path:
        value = value[step]
    return value


def _break_once(body: dict, rng: random.Random) -> None:
    path = rng.choice(list(_paths(body)))
    if not path:
        body[rng.choice(UNKNOWN_KEYS)] = rng.choice(HOSTILE_VALUES)
        return
    parent, last = _at(body, path[:-1]), path[-1]
    what = rng.random()
    if what < 0.6:
        parent[last] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
    elif what < 0.75 and isinstance(parent, dict):
        del parent[last]
    elif what < 0.9 and isinstance(target := parent[last], dict):
        target[rng.choice(UNKNOWN_KEYS)] = rng.choice(HOSTILE_VALUES)
    elif isinstance(parent, list):
        parent.append(copy.deepcopy(rng.choice([parent[last], *HOSTILE_VALUES])))
    else:
        parent[rng.choice(UNKNOWN_KEYS)] = parent[last]


def _encoded(body: object) -> bytes:
    text = json.dumps(body)  # NaN and Infinity come out as such; lone surrogates as \\ud800 escapes
    return text.replace(json.dumps(HUGE_INTEGER), HUGE_INTEGER_TEXT).encode()


def hostile_bodies(valid: list[dict], count: int, *, seed: int) -> Iterator[bytes]:
    """`count` bodies: the raw oddities above, then valid bodies with one to three things broken."""
    rng = random.Random(seed)
    yield from HAND_PICKED[:count]
    for _ in range(count - len(HAND_PICKED)):
        body = copy.deepcopy(rng.choice(valid))
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            _break_once(body, rng)
        yield _encoded(body)
