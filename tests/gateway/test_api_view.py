"""What every /v1 answer has in common, at the HTTP level: OpenAI's error JSON for every refusal, the key read
from either header, and the provider's own errors passed on (the SDKs' view of it is in tests/live)."""

import json
import string
from datetime import timedelta

import hypothesis
import pytest
from django.test import AsyncClient, Client
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from accounts.models import Reservation
from tests.fake_upstream import SERVER_ERROR_MESSAGE, Refuse, Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}


def chat(client: AsyncClient, body=BODY, **headers):
    return client.post(CHAT, json.dumps(body), content_type="application/json", headers=headers)


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- Every answer is OpenAI's JSON --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/files/abc", "/v1/chat/completions/", "/v1/"])
async def test_unknown_paths_are_openais_404_whatever_the_method_and_credentials(method, path, secret):
    browser = AsyncClient(enforce_csrf_checks=True)  # as a real server: no CSRF exemption for tests

    response = await browser.generic(method, path, b"{}", content_type="application/json")
    with_key = await browser.generic(method, path, headers={"Authorization": f"Bearer {secret}"})

    for answer in (response, with_key):
        assert answer.status_code == 404
        assert error_of(answer)["message"] == f"Invalid URL ({method} {path})"


@hypothesis.settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    path=st.text(alphabet=string.ascii_letters + string.digits + "-._~/%:@!$&'()*+,;=", max_size=40),
)
def test_whatever_is_asked_under_v1_without_a_key_the_answer_is_openais_error_json(method, path):
    response = Client(enforce_csrf_checks=True).generic(method, "/v1/" + path, b"{}", content_type="application/json")

    assert response.status_code in (401, 404, 405)
    assert error_of(response)["message"]


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/models/gpt-4o-mini", "GET"),
        ("GET", "/v1/realtime/client_secrets", "POST"),
    ],
)
async def test_wrong_methods_are_405_with_allow(secret, method, path, allowed):
    response = await AsyncClient().generic(method, path, headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 405
    assert response["Allow"] == allowed
    assert allowed in error_of(response)["message"]


async def test_a_body_too_large_for_django_is_a_json_413(secret, upstream, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = await chat(
        AsyncClient(), {**BODY, "messages": [{"role": "user", "content": "x" * 2000}]}, Authorization=f"Bearer {secret}"
    )

    assert response.status_code == 413
    assert error_of(response)["type"] == "invalid_request_error"
    assert upstream.requests == []


# -- The key, from either header ----------------------------------------------------------------


async def test_the_api_key_header_works_like_bearer(secret, upstream):
    client = AsyncClient(enforce_csrf_checks=True)

    completion = await chat(client, **{"api-key": secret})
    models = await client.get("/v1/models", headers={"api-key": secret})

    assert completion.status_code == 200
    assert completion.json()["choices"][0]["message"]["content"]
    assert models.status_code == 200
    assert "gpt-4o-mini" in {model["id"] for model in models.json()["data"]}


@pytest.mark.parametrize("headers", [{}, {"api-key": ""}, {"Authorization": "Basic abc"}, {"api-key": "csk-wrong"}])
async def test_no_key_or_a_wrong_one_is_401(catalog, upstream, headers):
    response = await chat(AsyncClient(), **headers)

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert upstream.requests == []


async def test_a_key_is_checked_before_the_body(catalog, upstream):
    response = await AsyncClient().post(
        CHAT, b"{not json", content_type="application/json", headers={"Authorization": "Bearer csk-wrong"}
    )

    assert response.status_code == 401


# -- Realtime mints: session or key, never Django's HTML -----------------------------------------


async def test_a_mint_without_any_credentials_is_a_json_401_not_a_csrf_page(catalog, upstream):
    response = await AsyncClient(enforce_csrf_checks=True).post(
        "/v1/realtime/client_secrets", b"{}", content_type="application/json"
    )

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert upstream.requests == []


async def test_a_logged_in_browser_without_its_csrf_token_gets_a_json_403(alice, catalog, upstream):
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.aforce_login(alice)

    response = await browser.post(
        "/v1/realtime/client_secrets", b"{}", content_type="application/json", headers={"X-CSRFToken": "forged"}
    )

    assert response.status_code == 403
    assert error_of(response)["message"].startswith("CSRF verification failed")
    assert upstream.requests == []


async def test_a_mint_with_the_api_key_header_needs_no_csrf_token(secret, upstream):
    response = await AsyncClient(enforce_csrf_checks=True).post(
        "/v1/realtime/client_secrets", b"{}", content_type="application/json", headers={"api-key": secret}
    )

    assert response.status_code == 200
    assert response.json()["value"].startswith("ek_")


# -- Our own limits ------------------------------------------------------------------------------


async def test_a_used_up_quota_says_when_it_resets_in_retry_after(secret, alice, upstream):
    alice.tokens_per_day = 10
    await alice.asave()

    response = await chat(AsyncClient(), Authorization=f"Bearer {secret}")

    assert response.status_code == 429
    assert error_of(response)["code"] == "insufficient_quota"
    tomorrow = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    left = (tomorrow - timezone.now()).total_seconds()
    assert left - 5 <= int(response["Retry-After"]) <= left + 5
    assert upstream.requests == []


# -- The provider's errors -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_the_providers_error_reaches_the_app_unchanged_but_scrubbed(secret, upstream, stream):
    said = Status(
        422,
        code="invalid_value",
        type="invalid_request_error",
        param="messages[0].content",
        message=f"Bad content for key sk-upstream-secret at {upstream.base_url}: try less.",
    )
    upstream.script(said)

    response = await chat(AsyncClient(), {**BODY, "stream": stream}, Authorization=f"Bearer {secret}")

    assert response.status_code == 422
    error = error_of(response)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", said.param)
    assert error["message"] == "Bad content for key [redacted] at [redacted]: try less."
    assert not await Reservation.objects.aexists()


async def test_a_provider_rate_limit_is_passed_on_at_once_with_its_retry_after(secret, upstream, settings):
    settings.UPSTREAM_RETRIES = 2
    upstream.script(Status(429, retry_after=2), Status(429, retry_after=2), Status(429, retry_after=2))

    response = await chat(AsyncClient(), Authorization=f"Bearer {secret}")

    assert response.status_code == 429
    assert response["Retry-After"] == "2"
    assert error_of(response)["code"] == "rate_limit_exceeded"
    assert len(upstream.requests) == 1


async def test_the_sites_own_provider_account_troubles_are_not_the_apps(secret, upstream, settings):
    """The provider refusing the site's key or credit is no fault of the app's key or quota."""
    settings.UPSTREAM_RETRIES = 0
    upstream.script(Status.invalid_api_key("sk-upstream-secret"), Status.insufficient_quota())

    bad_key = await chat(AsyncClient(), Authorization=f"Bearer {secret}")
    no_credit = await chat(AsyncClient(), Authorization=f"Bearer {secret}")

    assert (bad_key.status_code, no_credit.status_code) == (502, 503)
    assert error_of(bad_key)["type"] == error_of(no_credit)["type"] == "server_error"
    assert "sk-upstream-secret" not in bad_key.content.decode()


async def test_a_provider_that_cannot_be_reached_is_a_502_in_our_words(secret, upstream):
    upstream.script(Refuse())

    response = await chat(AsyncClient(), Authorization=f"Bearer {secret}")

    assert response.status_code == 502
    assert error_of(response)["type"] == "server_error"
    assert len(upstream.requests) == 1


async def test_a_providers_error_mid_stream_ends_the_relay_as_the_provider_sent_it(secret, upstream):
    upstream.script(Reply(chunks=["a", "b", "c"], error_after=1))

    response = await chat(AsyncClient(), {**BODY, "stream": True}, Authorization=f"Bearer {secret}")
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()

    events = [json.loads(line[6:]) for line in body.split("\n\n") if line.startswith("data: {")]
    assert events[-1] == {
        "error": {"message": SERVER_ERROR_MESSAGE, "type": "server_error", "param": None, "code": None}
    }
    assert not await Reservation.objects.aexists()
