"""Each client library raises against the site the exception it would raise against OpenAI, and retries as it
would: the openai Python SDK's error classes, models.retrieve, and litellm's context window error."""

import os
import subprocess
import sys
import textwrap

import httpx
import openai
import pytest

from accounts.models import Reservation
from accounts.services import api_key_create
from conversations.models import ChatModel
from tests.fake_upstream import Status

pytestmark = pytest.mark.django_db(transaction=True)

HI = [{"role": "user", "content": "Hi there"}]


@pytest.fixture
def secret(alice, catalog) -> str:
    return api_key_create(user=alice, name="sdk")[1]


def sdk(site: str, secret: str, *, max_retries: int = 0, sent: list | None = None) -> openai.OpenAI:
    """The SDK pointed at the site; each request it sends to the site is added to `sent`."""
    hooks = {"request": [sent.append]} if sent is not None else {}
    return openai.OpenAI(
        base_url=f"{site}/v1",
        api_key=secret,
        max_retries=max_retries,
        timeout=15,
        http_client=openai.DefaultHttpxClient(event_hooks=hooks),
    )


# -- models.retrieve -----------------------------------------------------------------------------


def test_models_retrieve_finds_a_model_the_key_may_use(live_site, secret):
    model = sdk(live_site, secret).models.retrieve("gpt-4o-mini")

    assert (model.id, model.object) == ("gpt-4o-mini", "model")


@pytest.mark.parametrize("model_id", ["gpt-9", "gpt-realtime", "smollm2-135m"])
def test_models_retrieve_of_a_model_the_key_may_not_use_is_not_found(live_site, alice, catalog, model_id):
    mini_only = api_key_create(user=alice, name="mini", allowed_models=ChatModel.objects.filter(model_id="gpt-4o-mini"))
    client = sdk(live_site, mini_only[1])

    with pytest.raises(openai.NotFoundError) as refused:
        client.models.retrieve(model_id)

    assert refused.value.code == "model_not_found"
    assert f"`{model_id}`" in refused.value.message


def test_models_retrieve_with_a_wrong_key_is_an_authentication_error(live_site, catalog):
    with pytest.raises(openai.AuthenticationError):
        sdk(live_site, "csk-wrong").models.retrieve("gpt-4o-mini")


# -- The error matrix ----------------------------------------------------------------------------


def test_a_used_up_quota_is_a_rate_limit_error_the_sdk_does_not_retry(live_site, secret, alice, upstream):
    alice.tokens_per_day = 10
    alice.save()
    sent = []

    with pytest.raises(openai.RateLimitError) as limited:
        sdk(live_site, secret, max_retries=2, sent=sent).chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert limited.value.code == "insufficient_quota"
    assert int(limited.value.response.headers["Retry-After"]) > 60  # until midnight: longer than SDKs wait
    assert len(sent) == 1
    assert upstream.requests == []


def test_a_provider_context_overflow_is_a_bad_request_in_the_providers_words(live_site, secret, upstream):
    overflow = Status.context_length_exceeded(limit=128000, requested=130000)
    upstream.script(overflow)

    with pytest.raises(openai.BadRequestError) as refused:
        sdk(live_site, secret).chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert refused.value.code == "context_length_exceeded"
    assert refused.value.param == "messages"
    assert refused.value.body["message"] == overflow.message


def test_a_provider_rate_limit_is_one_upstream_request_and_a_rate_limit_error(live_site, secret, upstream):
    upstream.script(*[Status(429, retry_after=30)] * 3)

    with pytest.raises(openai.RateLimitError) as limited:
        sdk(live_site, secret).chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["Retry-After"] == "30"
    assert len(upstream.requests) == 1
    assert not Reservation.objects.exists()


def test_the_sdks_own_retries_are_the_only_ones(live_site, secret, upstream):
    upstream.script(Status(429, retry_after=1), Status(429, retry_after=1), Status(429, retry_after=1))
    sent = []

    with pytest.raises(openai.RateLimitError):
        sdk(live_site, secret, max_retries=1, sent=sent).chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert len(sent) == 2
    assert len(upstream.requests) == 2  # one for each of the SDK's tries, not UPSTREAM_RETRIES more each


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_provider_server_error_is_an_internal_server_error_with_its_status(live_site, secret, upstream, status):
    upstream.script(Status.server_error(status))

    with pytest.raises(openai.InternalServerError) as failed:
        sdk(live_site, secret).chat.completions.create(model="gpt-4o-mini", messages=HI)

    assert failed.value.status_code == status
    assert len(upstream.requests) == 1


def test_a_provider_error_while_streaming_is_an_api_error(live_site, secret, upstream):
    upstream.script(Status.context_length_exceeded())

    with pytest.raises(openai.BadRequestError) as refused:
        sdk(live_site, secret).chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)

    assert refused.value.code == "context_length_exceeded"


def test_an_unknown_path_is_a_not_found_error_with_openais_message(live_site, secret):
    with pytest.raises(openai.NotFoundError) as refused:
        sdk(live_site, secret).get("/fine_tuning/jobs", cast_to=httpx.Response)

    assert refused.value.body["message"] == "Invalid URL (GET /v1/fine_tuning/jobs)"


# -- litellm -------------------------------------------------------------------------------------


def test_litellm_raises_its_context_window_error_on_a_provider_context_overflow(live_site, secret, upstream):
    upstream.script(Status.context_length_exceeded())
    # In a process of its own: litellm sets up logging and callbacks of its own on import.
    script = textwrap.dedent(
        """
        import sys
        import litellm

        try:
            litellm.completion(
                model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}],
                api_base=sys.argv[1], api_key=sys.argv[2], num_retries=0, max_retries=0,
            )
        except litellm.ContextWindowExceededError as error:
            print("ContextWindowExceededError", error.status_code)
        except Exception as error:
            print(type(error).__name__, error)
        """
    )
    # The local copy of litellm's model list: no attempt to fetch it from the internet.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}

    ran = subprocess.run(
        [sys.executable, "-c", script, f"{live_site}/v1", secret],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip

    assert ran.stdout.strip().splitlines()[-1] == "ContextWindowExceededError 400", ran.stdout + ran.stderr[-2000:]
    assert len(upstream.requests) == 1
