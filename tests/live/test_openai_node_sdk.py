"""The openai Node SDK (from npm, pinned in tests/node/package-lock.json) as a second real client of /v1.

Each call runs `node tests/node/call.mjs` against the live site; make test installs the SDK into
tests/node/node_modules.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from accounts.models import UsageRecord
from accounts.services import api_key_create
from tests.fake_upstream import Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
HI = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").exists():
        pytest.fail("The openai Node SDK is not installed: make test installs it (npm ci in tests/node)")
    return NODE_DIR / "call.mjs"


@pytest.fixture
def secret(alice, catalog) -> str:
    return api_key_create(user=alice, name="node app")[1]


def node_call(script: Path, site: str, secret: str, kind: str, args: dict | None = None, *, max_retries: int = 0):
    """What one call of the Node SDK gave: {"ok": ...} or {"error": {"classes": [...], "status": ...}}."""
    env = {**os.environ, "SITE_V1": f"{site}/v1", "SITE_KEY": secret, "MAX_RETRIES": str(max_retries)}
    ran = subprocess.run(
        ["node", str(script), kind, json.dumps(args or {})], capture_output=True, text=True, timeout=60, env=env
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    return json.loads(ran.stdout.strip().splitlines()[-1])


def test_a_chat_completion(node_sdk, live_site, secret, upstream):
    upstream.script(Reply(text="Hello, Node.", prompt_tokens=9, completion_tokens=3))

    result = node_call(node_sdk, live_site, secret, "chat", {"model": "gpt-4o-mini", "messages": HI})

    assert result["ok"]["text"] == "Hello, Node."
    assert result["ok"]["usage"]["completion_tokens"] == 3
    assert UsageRecord.objects.get().completion_tokens == 3


def test_a_streamed_chat_completion(node_sdk, live_site, secret, upstream):
    upstream.script(Reply(chunks=["One ", "two ", "three"]))

    result = node_call(node_sdk, live_site, secret, "stream", {"model": "gpt-4o-mini", "messages": HI})

    assert result["ok"]["pieces"] == ["One ", "two ", "three"]


def test_models_list_and_retrieve(node_sdk, live_site, secret):
    listed = node_call(node_sdk, live_site, secret, "models")
    retrieved = node_call(node_sdk, live_site, secret, "retrieve", {"id": "gpt-4o"})

    assert set(listed["ok"]["ids"]) == {"gpt-4o-mini", "gpt-4o"}
    assert retrieved["ok"]["id"] == "gpt-4o"


def test_a_wrong_key_is_an_authentication_error(node_sdk, live_site, catalog, upstream):
    result = node_call(node_sdk, live_site, "csk-wrong", "chat", {"model": "gpt-4o-mini", "messages": HI})

    assert result["error"]["classes"] == ["AuthenticationError"]
    assert (result["error"]["status"], result["error"]["code"]) == (401, "invalid_api_key")
    assert upstream.requests == []


def test_a_used_up_quota_is_a_rate_limit_error_with_retry_after(node_sdk, live_site, secret, alice, upstream):
    alice.tokens_per_day = 10
    alice.save()

    result = node_call(node_sdk, live_site, secret, "chat", {"model": "gpt-4o-mini", "messages": HI})

    assert result["error"]["classes"] == ["RateLimitError"]
    assert result["error"]["code"] == "insufficient_quota"
    assert int(result["error"]["retryAfter"]) > 60


def test_a_provider_rate_limit_is_a_rate_limit_error_after_one_upstream_request(node_sdk, live_site, secret, upstream):
    upstream.script(*[Status(429, retry_after=30)] * 3)

    result = node_call(node_sdk, live_site, secret, "chat", {"model": "gpt-4o-mini", "messages": HI})

    assert result["error"]["classes"] == ["RateLimitError"]
    assert result["error"]["retryAfter"] == "30"
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("kind, args", [("chat", {"model": "gpt-9", "messages": HI}), ("retrieve", {"id": "gpt-9"})])
def test_an_unknown_model_is_not_found(node_sdk, live_site, secret, upstream, kind, args):
    result = node_call(node_sdk, live_site, secret, kind, args)

    assert result["error"]["classes"] == ["NotFoundError"]
    assert result["error"]["code"] == "model_not_found"


def test_a_provider_context_overflow_is_a_bad_request_in_the_providers_words(node_sdk, live_site, secret, upstream):
    overflow = Status.context_length_exceeded()
    upstream.script(overflow)

    result = node_call(node_sdk, live_site, secret, "stream", {"model": "gpt-4o-mini", "messages": HI})

    assert result["error"]["classes"] == ["BadRequestError"]
    assert (result["error"]["code"], result["error"]["param"]) == ("context_length_exceeded", "messages")
    assert result["error"]["message"] == overflow.message


def test_a_provider_server_error_is_an_internal_server_error(node_sdk, live_site, secret, upstream):
    upstream.script(Status.server_error(502))

    result = node_call(node_sdk, live_site, secret, "chat", {"model": "gpt-4o-mini", "messages": HI})

    assert result["error"]["classes"] == ["InternalServerError"]
    assert result["error"]["status"] == 502


def test_a_response_and_a_streamed_one(node_sdk, live_site, secret, upstream):
    upstream.script(Reply(text="Hello, Node.", prompt_tokens=9, completion_tokens=3), Reply(chunks=["a", "b"]))

    whole = node_call(node_sdk, live_site, secret, "responses", {"model": "gpt-4o-mini", "input": "Hi"})
    streamed = node_call(node_sdk, live_site, secret, "responsesStream", {"model": "gpt-4o-mini", "input": "Hi"})

    assert (whole["ok"]["text"], whole["ok"]["status"]) == ("Hello, Node.", "completed")
    assert (whole["ok"]["usage"]["input_tokens"], whole["ok"]["usage"]["output_tokens"]) == (9, 3)
    assert streamed["ok"]["deltas"] == ["a", "b"]
    assert streamed["ok"]["types"][0] == "response.created" and streamed["ok"]["types"][-1] == "response.completed"
    assert UsageRecord.objects.count() == 2


def test_embeddings(node_sdk, live_site, secret, upstream):
    result = node_call(
        node_sdk, live_site, secret, "embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}
    )

    # The Node SDK, like the Python one, asks for base64 and decodes it to floats.
    assert upstream.requests[0].json["encoding_format"] == "base64"
    assert result["ok"]["lengths"] == [1536, 1536]
    assert UsageRecord.objects.get().prompt_tokens == result["ok"]["usage"]["prompt_tokens"]
