"""POST /v1/realtime/client_secrets: a short-lived Realtime secret for an app or the logged-in browser.

The upstream is the fake on loopback; what it received is what the provider
would have. Time is moved with time_machine where a rule counts seconds or days.
"""

import asyncio
import json
import logging
import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.test import AsyncClient
from django.utils import timezone
from django_ratelimit.core import _get_window

from accounts.billing.budget import QuotaExceeded
from accounts.models import RealtimeSecret, User, local_today
from accounts.services import api_key_create, realtime_secret_record
from conversations.models import ChatModel
from tests.conftest import htmx_csrf_token
from tests.fake_upstream import Hang, Refuse, Reply, Status

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/realtime/client_secrets"
PROVIDER_KEY = "sk-upstream-secret"  # what the `upstream` fixture configures
FULL = {
    "expires_after": {"anchor": "created_at", "seconds": 300},
    "session": {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Answer in one sentence.",
        "audio": {"output": {"voice": "marin"}},
    },
}


@pytest.fixture(autouse=True)
def _gpt_realtime_by_default(settings):
    """These tests mint on a site whose default realtime model is gpt-realtime (the site's own default,
    gpt-realtime-2, is in tests/gateway/test_realtime_default_model.py)."""
    settings.REALTIME_DEFAULT_MODEL = "gpt-realtime"


@pytest.fixture
def key(alice, catalog):
    return api_key_create(user=alice, name="phone app")


@pytest.fixture
def secret(key) -> str:
    return key[1]


def mint(client: AsyncClient, body=None, *, secret: str | None = None, **headers):
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    data = body if isinstance(body, bytes) else json.dumps(body) if body is not None else b""
    return client.post(URL, data, content_type="application/json", headers=headers)


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]


async def minted_seconds(user) -> list[int]:
    return [s async for s in RealtimeSecret.objects.filter(user=user).order_by("pk").values_list("seconds", flat=True)]


# -- It works -------------------------------------------------------------------------------------


async def test_an_app_with_a_site_key_gets_a_secret_and_its_expiry(key, alice, upstream):
    before = int(time.time())

    response = await mint(AsyncClient(), FULL, secret=key[1])

    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"value", "expires_at", "session"}
    assert answer["value"].startswith("ek_")
    assert before + 300 <= answer["expires_at"] <= int(time.time()) + 300
    assert answer["session"] == {"type": "realtime", "model": "gpt-realtime"}
    assert response["Cache-Control"] == "no-store"
    # Upstream: the provider key, never the app's, and exactly the allowed session.
    sent = upstream.requests[0]
    assert sent.path == "/v1/realtime/client_secrets"
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert sent.json == FULL
    row = await RealtimeSecret.objects.select_related("model").aget()
    assert (row.user_id, row.api_key_id, row.model.model_id, row.seconds) == (alice.pk, key[0].pk, "gpt-realtime", 300)
    assert row.day == local_today()
    assert row.expires_at == datetime.fromtimestamp(answer["expires_at"], UTC)


async def test_an_empty_request_gets_gpt_realtime_for_two_minutes(secret, upstream):
    response = await mint(AsyncClient(), secret=secret)

    assert response.status_code == 200
    assert response.json()["session"]["model"] == "gpt-realtime"
    assert upstream.requests[0].json == {
        "expires_after": {"anchor": "created_at", "seconds": 120},
        "session": {"type": "realtime", "model": "gpt-realtime"},
    }


async def test_nulls_count_as_not_given(secret, upstream):
    body = {"expires_after": None, "session": {"type": None, "model": None, "instructions": None, "audio": None}}

    response = await mint(AsyncClient(), body, secret=secret)

    assert response.status_code == 200
    assert upstream.requests[0].json["expires_after"]["seconds"] == 120


async def test_another_realtime_model_in_the_catalog_can_be_asked_for(secret, upstream):
    await ChatModel.objects.acreate(
        model_id="gpt-realtime-mini", display_name="Realtime mini", context_window=32_000, max_output_tokens=4_096,
        realtime=True,
    )  # fmt: skip

    response = await mint(AsyncClient(), {"session": {"type": "realtime", "model": "gpt-realtime-mini"}}, secret=secret)

    assert response.status_code == 200
    assert response.json()["session"]["model"] == "gpt-realtime-mini"
    assert upstream.requests[0].json["session"]["model"] == "gpt-realtime-mini"


async def test_the_logged_in_browser_gets_a_secret_with_its_csrf_token(alice, catalog, upstream):
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.aforce_login(alice)
    token = htmx_csrf_token(await browser.get("/"))

    response = await mint(browser, FULL, **{"X-CSRFToken": token})

    assert response.status_code == 200
    assert response.json()["value"].startswith("ek_")
    row = await RealtimeSecret.objects.aget()
    assert (row.user_id, row.api_key_id) == (alice.pk, None)


@pytest.mark.parametrize(
    "asked, granted", [(5, 10), (10, 10), (3600, 3600), (7200, 7200), (99999, 7200), (-3, 10), (0, 10)]
)
async def test_lifetimes_are_clamped_to_what_openai_accepts(secret, alice, upstream, asked, granted):
    before = int(time.time())

    response = await mint(AsyncClient(), {"expires_after": {"anchor": "created_at", "seconds": asked}}, secret=secret)

    assert response.status_code == 200
    assert upstream.requests[0].json["expires_after"] == {"anchor": "created_at", "seconds": granted}
    assert before + granted <= response.json()["expires_at"] <= int(time.time()) + granted
    assert await minted_seconds(alice) == [granted]


# -- Only allowed fields go upstream -------------------------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ({"foo": 1}, "foo"),
        ({"session": {"type": "realtime", "tools": [{"type": "function", "name": "pay"}]}}, "session.tools"),
        ({"session": {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}}, "session.audio.input"),
        ({"session": {"audio": {"output": {"voice": "alloy", "speed": 1.5}}}}, "session.audio.output.speed"),
        ({"session": {"tracing": "auto"}}, "session.tracing"),
        ({"expires_after": {"seconds": 60, "renew": True}}, "expires_after.renew"),
    ],
)
async def test_fields_the_site_keeps_for_itself_are_refused_by_name(secret, alice, upstream, body, param):
    response = await mint(AsyncClient(), body, secret=secret)

    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "unknown_parameter")
    assert f"'{param}' cannot be set through this site" in error["message"]
    assert upstream.requests == []
    assert await minted_seconds(alice) == []


@pytest.mark.parametrize(
    "body, param",
    [
        ({"expires_after": 60}, "expires_after"),
        ({"expires_after": {"seconds": "60"}}, "expires_after.seconds"),
        ({"expires_after": {"seconds": 60.5}}, "expires_after.seconds"),
        ({"expires_after": {"seconds": True}}, "expires_after.seconds"),
        ({"expires_after": {"anchor": "now"}}, "expires_after.anchor"),
        ({"session": "gpt-realtime"}, "session"),
        ({"session": {"type": "transcription"}}, "session.type"),
        ({"session": {"model": 4}}, "session.model"),
        ({"session": {"model": "gpt-realtime\x00"}}, "session.model"),  # PostgreSQL refuses NUL in a query
        ({"session": {"model": "gpt-\ud800"}}, "session.model"),
        ({"session": {"instructions": ["Be brief."]}}, "session.instructions"),
        ({"session": {"instructions": "x" * 8_001}}, "session.instructions"),
        ({"session": {"audio": {"output": "alloy"}}}, "session.audio.output"),
        ({"session": {"audio": {"output": {"voice": "darth"}}}}, "session.audio.output.voice"),
        ({"session": {"audio": {"output": {"voice": {"id": "voice_123"}}}}}, "session.audio.output.voice"),
        ([], None),
    ],
)
async def test_malformed_values_are_refused_by_name(secret, upstream, body, param):
    response = await mint(AsyncClient(), body, secret=secret)

    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    if param:
        assert f"'{param}'" in error["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("raw", [b"{not json", b"[" * 100_000 + b"]" * 100_000, b'{"expires_after": NaN}'])
async def test_a_body_that_is_not_json_is_a_clear_400(secret, upstream, raw):
    response = await mint(AsyncClient(), raw, secret=secret)

    assert response.status_code == 400
    assert error_of(response)["message"] == "We could not parse the JSON body of your request."


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-nonexistent"])
async def test_chat_models_and_unknown_models_are_not_found(secret, upstream, model):
    response = await mint(AsyncClient(), {"session": {"type": "realtime", "model": model}}, secret=secret)

    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["param"]) == ("model_not_found", "session.model")
    assert f"`{model}`" in error["message"]
    assert upstream.requests == []


async def test_a_disabled_realtime_model_is_not_found(secret, upstream):
    await ChatModel.objects.filter(model_id="gpt-realtime").aupdate(enabled=False)

    response = await mint(AsyncClient(), secret=secret)

    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


async def test_a_user_limited_to_other_models_gets_no_secret(secret, alice, upstream):
    await alice.allowed_models.aset([await ChatModel.objects.aget(model_id="gpt-4o-mini")])

    response = await mint(AsyncClient(), secret=secret)

    assert response.status_code == 404
    assert upstream.requests == []


async def test_a_key_limited_to_chat_models_gets_no_secret_but_one_allowed_realtime_does(alice, catalog, upstream):
    chat_only, realtime_too = [
        (await sync_to_async(api_key_create)(user=alice, name=name, allowed_models=models))[1]
        for name, models in [
            ("chat", ChatModel.objects.filter(model_id="gpt-4o-mini")),
            ("voice", ChatModel.objects.filter(model_id="gpt-realtime")),
        ]
    ]

    refused = await mint(AsyncClient(), secret=chat_only)
    allowed = await mint(AsyncClient(), secret=realtime_too)

    assert refused.status_code == 404
    assert allowed.status_code == 200


# -- Who may ask ---------------------------------------------------------------------------------


async def test_without_a_key_or_a_session_it_is_401(catalog, upstream):
    response = await mint(AsyncClient())

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
    assert upstream.requests == []


async def test_a_wrong_key_is_401(catalog, upstream):
    response = await mint(AsyncClient(), secret="csk-not-a-real-key")

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


async def test_the_browser_without_a_csrf_token_is_refused(alice, catalog, upstream):
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.aforce_login(alice)

    response = await mint(browser)

    assert response.status_code == 403
    assert upstream.requests == []


async def test_a_session_does_not_stand_in_for_a_bad_key(alice, catalog, upstream):
    """A request with an Authorization header skips the CSRF check, so its session must not count."""
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.aforce_login(alice)

    response = await mint(browser, secret="junk")

    assert response.status_code == 401
    assert upstream.requests == []


async def test_wrong_methods_get_an_openai_error(secret):
    response = await AsyncClient().get(URL, headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 405
    assert "error" in response.json()


async def test_a_flutter_web_build_on_an_allowed_origin_may_call_it(secret, upstream, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://voice.example.com"]
    client = AsyncClient()

    preflight = await client.options(
        URL,
        headers={
            "Origin": "https://voice.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    call = await mint(client, secret=secret, Origin="https://voice.example.com")

    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://voice.example.com"
    assert "authorization" in preflight["Access-Control-Allow-Headers"]
    assert "POST" in preflight["Access-Control-Allow-Methods"]
    assert call.status_code == 200
    assert call["Access-Control-Allow-Origin"] == "https://voice.example.com"


# -- One secret per 5 seconds --------------------------------------------------------------------


async def test_a_second_secret_within_5_seconds_is_refused_then_allowed(secret, alice, upstream):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = await mint(AsyncClient(), secret=secret)
        clock.shift(1)
        too_soon = await mint(AsyncClient(), secret=secret)
        clock.shift(4)
        again = await mint(AsyncClient(), secret=secret)

    assert first.status_code == 200
    assert too_soon.status_code == 429
    error = error_of(too_soon)
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert "every 5 seconds" in error["message"]
    assert too_soon["Retry-After"] == "4"
    assert again.status_code == 200
    assert len(upstream.requests) == 2
    assert await minted_seconds(alice) == [120, 120]


async def test_the_interval_is_per_user_not_per_key(alice, bob, catalog, upstream):
    alices = [(await sync_to_async(api_key_create)(user=alice, name=n))[1] for n in ("phone", "tablet")]
    bobs = (await sync_to_async(api_key_create)(user=bob, name="phone"))[1]

    statuses = [(await mint(AsyncClient(), secret=s)).status_code for s in (*alices, bobs)]

    assert statuses == [200, 429, 200]


async def test_parallel_requests_get_one_secret_and_make_one_upstream_call(secret, alice, upstream):
    upstream.default = Reply(first_delay=0.2)  # all of them in flight at once
    # The burst counter counts in fixed 5 s windows: keep the burst inside one.
    left = _get_window(f"user:{alice.pk}", 5) + 1 - time.time()
    if left < 1:
        await asyncio.sleep(left)

    answers = await asyncio.gather(*(mint(AsyncClient(), secret=secret) for _ in range(5)))

    assert sorted(a.status_code for a in answers) == [200, 429, 429, 429, 429]
    assert await minted_seconds(alice) == [120]
    assert len(upstream.requests) == 1


def test_mints_finishing_together_are_counted_one_after_the_other(alice, catalog):
    """Mints that all passed the first check reach the ledger together: only one may count."""
    model = ChatModel.objects.get(model_id="gpt-realtime")
    outcomes = []

    def record():
        try:
            realtime_secret_record(user=alice, model=model, seconds=120, expires_at=timezone.now())
            outcomes.append("recorded")
        except QuotaExceeded as refused:
            outcomes.append(refused.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=record) for _ in range(4)]
    # Holding alice's row until all four are under way lines them up: without a lock of
    # their own they would all read an empty ledger, then all write (a new row waits
    # for the user row it refers to).
    with transaction.atomic():
        User.objects.select_for_update().get(pk=alice.pk)
        for thread in threads:
            thread.start()
        time.sleep(0.5)
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(outcomes) == ["realtime_interval"] * 3 + ["recorded"]
    assert RealtimeSecret.objects.filter(user=alice).count() == 1


# -- Daily realtime minutes ----------------------------------------------------------------------


async def test_the_daily_minutes_limit_says_what_is_left_and_when_it_resets(secret, alice, upstream):
    alice.realtime_minutes_per_day = 3
    await alice.asave()
    model = await ChatModel.objects.aget(model_id="gpt-realtime")
    earlier = timezone.now() - timedelta(minutes=10)
    for day, seconds in [(local_today(), 150), (local_today() - timedelta(days=1), 7200)]:
        await RealtimeSecret.objects.acreate(
            user=alice, model=model, seconds=seconds, day=day, created_at=earlier, expires_at=earlier
        )

    refused = await mint(AsyncClient(), {"expires_after": {"seconds": 60}}, secret=secret)
    shorter = await mint(AsyncClient(), {"expires_after": {"seconds": 30}}, secret=secret)

    assert refused.status_code == 429
    error = error_of(refused)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert error["message"].startswith("Only 30 s of your 3 realtime minutes for today are left: too few for 60 s.")
    assert "It resets at 00:00" in error["message"]
    assert shorter.status_code == 200  # what is left can still be used
    assert len(upstream.requests) == 1
    assert sum(await minted_seconds(alice)) == 150 + 7200 + 30


async def test_users_without_their_own_limit_get_the_sites(secret, alice, upstream, settings):
    settings.QUOTA_REALTIME_MINUTES_PER_DAY = 1

    refused = await mint(AsyncClient(), {"expires_after": {"seconds": 61}}, secret=secret)
    allowed = await mint(AsyncClient(), {"expires_after": {"seconds": 60}}, secret=secret)

    assert refused.status_code == 429
    assert error_of(refused)["message"].startswith("Only 1 min of your 1 realtime minutes for today are left")
    assert allowed.status_code == 200


async def test_the_minutes_come_back_at_midnight_in_the_sites_time_zone(secret, alice, upstream, settings):
    settings.TIME_ZONE = "America/New_York"
    alice.realtime_minutes_per_day = 1
    await alice.asave()

    # 23:30 on 9 March in New York, already 10 March in UTC.
    with time_machine.travel(datetime(2026, 3, 10, 3, 30, tzinfo=UTC), tick=False) as clock:
        first = await mint(AsyncClient(), {"expires_after": {"seconds": 60}}, secret=secret)
        clock.shift(timedelta(minutes=20))
        used_up = await mint(AsyncClient(), {"expires_after": {"seconds": 60}}, secret=secret)
        clock.shift(timedelta(minutes=10))
        next_day = await mint(AsyncClient(), {"expires_after": {"seconds": 60}}, secret=secret)

    assert first.status_code == 200
    assert used_up.status_code == 429
    assert error_of(used_up)["message"] == (
        "You have used your 1 realtime minutes for today. It resets at 00:00 on 10 March (America/New_York), in 10 min."
    )
    assert next_day.status_code == 200
    days = [d async for d in RealtimeSecret.objects.order_by("pk").values_list("day", flat=True)]
    assert days == [date(2026, 3, 9), date(2026, 3, 10)]


# -- Upstream failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status, type, code",
    [
        (Status.server_error(500), 503, "server_error", "upstream_unavailable"),
        (Status.invalid_api_key(PROVIDER_KEY), 502, "server_error", "upstream_error"),
        (Status(429, retry_after=7), 429, "requests", "rate_limit_exceeded"),
        (Status.insufficient_quota(), 503, "server_error", "upstream_unavailable"),
        (Refuse(), 502, "server_error", "upstream_error"),
        (Hang(seconds=5), 502, "server_error", "upstream_error"),
    ],
)
async def test_upstream_failures_reach_the_app_in_openai_format_and_count_nothing(
    secret, alice, upstream, settings, fault, status, type, code
):
    settings.UPSTREAM_RETRIES = 0
    settings.UPSTREAM_READ_TIMEOUT = 0.5
    upstream.script(fault)

    response = await mint(AsyncClient(), secret=secret)

    assert response.status_code == status
    error = error_of(response)
    assert (error["type"], error["code"]) == (type, code)
    assert PROVIDER_KEY not in response.content.decode()
    assert await minted_seconds(alice) == []


async def test_an_upstream_rate_limit_says_when_to_try_again(secret, upstream, settings):
    settings.UPSTREAM_RETRIES = 0
    upstream.script(Status(429, retry_after=7))

    response = await mint(AsyncClient(), secret=secret)

    assert response["Retry-After"] == "7"
    assert "Try again in 7 s" in error_of(response)["message"]


async def test_a_passing_upstream_fault_is_retried(secret, alice, upstream):
    upstream.script(Status.server_error(503))

    response = await mint(AsyncClient(), secret=secret)

    assert response.status_code == 200
    assert len(upstream.requests) == 2
    assert await minted_seconds(alice) == [120]


# -- Logs ----------------------------------------------------------------------------------------


async def test_neither_the_secret_nor_the_provider_key_is_logged(alice, bob, catalog, upstream, caplog, settings):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "httpx2", "httpcore2", "django"):
        caplog.set_level(logging.DEBUG, logger=name)
    settings.UPSTREAM_RETRIES = 1
    alices, bobs = [(await sync_to_async(api_key_create)(user=user, name="app"))[1] for user in (alice, bob)]
    upstream.script(Status.server_error(500), Reply(), Status.invalid_api_key(PROVIDER_KEY))

    minted = await mint(AsyncClient(), FULL, secret=alices)  # after a retry
    failed = await mint(AsyncClient(), secret=bobs)  # the provider rejects the site's key
    too_soon = await mint(AsyncClient(), secret=alices)

    assert (minted.status_code, failed.status_code, too_soon.status_code) == (200, 502, 429)
    value = minted.json()["value"]
    logged = caplog.text
    assert "HTTP Request: POST" in logged  # httpx's own logging was captured
    assert "retry 1" in logged
    for never in (value, value.removeprefix("ek_"), PROVIDER_KEY, alices, bobs):
        assert never not in logged
