"""A server process that stops, asked to (SIGTERM) or not (kill -9), leaves no reply streaming and no budget held.

Each test runs daphne processes of its own, since it stops them; they share
the test database, Redis and the fake upstream with the rest of the suite.
"""

import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from accounts.models import Reservation, ServerProcess, UsageRecord, User
from accounts.services import api_key_create
from conversations.models import ChatModel, Message
from tests.conftest import make_conversation, make_message
from tests.fake_upstream import Reply
from tests.live.conftest import HTTP_TIMEOUT, chat_start, login, reply_watch, same_session, site_env, stream_url
from tests.servers import site_pid, site_server, site_signal

pytestmark = pytest.mark.django_db(transaction=True)

WORDS = [f"w{i} " for i in range(400)]  # twenty seconds of reply at one word every 50 ms
SENT = "".join(WORDS)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class ApiStream:
    """A streamed /v1 chat completion, read on a thread of its own until the stream or its connection ends."""

    def __init__(self, base_url: str, secret: str):
        self.text = ""
        self.started = threading.Event()  # some text arrived
        self.thread = threading.Thread(target=self._read, args=(base_url, secret), daemon=True)
        self.thread.start()

    def _read(self, base_url: str, secret: str) -> None:
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Talk to me"}]}
        headers = {"Authorization": f"Bearer {secret}"}
        try:
            with (
                httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT, trust_env=False) as client,
                client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
            ):
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        for choice in json.loads(line.removeprefix("data: "))["choices"]:
                            self.text += choice["delta"].get("content") or ""
                        if self.text:
                            self.started.set()
        except httpx.HTTPError:
            pass  # the server went away mid-stream


@pytest.fixture
def api_secret(alice, catalog) -> str:
    return api_key_create(user=alice, name="script")[1]


def replies_under_way(reply_ids: list[int], streams: list[ApiStream]) -> Callable[[], bool]:
    """Whether every web reply has saved some text and every /v1 stream has delivered some."""

    def check() -> bool:
        saved = Message.objects.filter(pk__in=reply_ids, content__gt="").count()
        return saved == len(reply_ids) and all(stream.started.is_set() for stream in streams)

    return check


def process_rows(pid: int):
    """The ServerProcess rows of the process with this pid (names are host:pid:random)."""
    return ServerProcess.objects.filter(name__contains=f":{pid}:")


def assert_interrupted_and_billed_once(reply: Message, prices) -> None:
    """The reply kept the text it had, says it was interrupted, and is billed once, estimated, at `prices`."""
    assert reply.status == Message.Status.INTERRUPTED, reply.status
    assert reply.content and SENT.startswith(reply.content)
    assert reply.error_code == "interrupted"
    assert reply.usage_estimated
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.cost == prices.cost(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
    record = UsageRecord.objects.get(message=reply)
    assert (record.prompt_tokens, record.completion_tokens, record.cost, record.estimated) == (
        reply.prompt_tokens,
        reply.completion_tokens,
        reply.cost,
        True,
    )


def test_sigterm_interrupts_saves_and_settles_every_reply_and_call_before_the_process_exits(
    live_env, alice, api_secret, upstream
):
    upstream.default = Reply(chunks=WORDS, delay=0.05)
    prices = ChatModel.objects.get(model_id="gpt-4o-mini").prices()

    with site_server(live_env) as site:
        client = login(site, alice)
        reply_ids = [chat_start(client, f"Tell me story {i}")[1] for i in range(10)]
        streams = [ApiStream(site, api_secret) for _ in range(3)]
        wait_until(replies_under_way(reply_ids, streams), timeout=15, what="every reply under way")
        pid = site_pid(site)

        status = site_signal(site, signal.SIGTERM, timeout=20)

    assert status == 0
    for reply in Message.objects.filter(pk__in=reply_ids):
        assert_interrupted_and_billed_once(reply, prices)
    api_calls = UsageRecord.objects.filter(kind=UsageRecord.Kind.API)
    assert api_calls.count() == len(streams)
    for call in api_calls:
        assert call.estimated and call.prompt_tokens > 0 and call.completion_tokens > 0
    for stream in streams:
        stream.thread.join(timeout=5)
        assert stream.text and SENT.startswith(stream.text)
    assert not Reservation.objects.exists()
    assert not process_rows(pid).exists()
    # Every upstream stream was closed by the site, none left to run (and bill) to its end.
    upstream.wait_for_disconnects(len(reply_ids) + len(streams))
    assert all(request.chunks_sent < len(WORDS) for request in upstream.requests)


def test_after_kill_9_another_process_interrupts_the_replies_and_releases_the_budget_at_the_starting_prices(
    django_db_setup, tmp_path, alice, bob, api_secret, upstream
):
    env = site_env(tmp_path, OPENAI_BASE_URL=upstream.base_url, STREAM_STALE_AFTER="2")
    upstream.default = Reply(chunks=WORDS, delay=0.05)
    mini = ChatModel.objects.get(model_id="gpt-4o-mini")
    started_prices = mini.prices()

    with site_server(env) as site_a, site_server(env) as site_b:
        # Bob's reply keeps B busy, and a busy process sweeps up after dead ones on its timer.
        chat_start(login(site_b, bob), "Keep talking")
        alice_a = login(site_a, alice)
        reply_ids = [chat_start(alice_a, f"Tell me story {i}")[1] for i in range(3)]
        stream = ApiStream(site_a, api_secret)
        wait_until(replies_under_way(reply_ids, [stream]), timeout=15, what="every reply under way")
        # Alice's daily limit leaves room for nothing beside what A's calls hold, and prices go up.
        held = Reservation.objects.filter(user=alice).aggregate(tokens=Sum("tokens"))["tokens"]
        User.objects.filter(pk=alice.pk).update(tokens_per_day=held + 50)
        ChatModel.objects.filter(pk=mini.pk).update(
            input_price=mini.input_price * 10, output_price=mini.output_price * 10
        )
        alice_b = same_session(alice_a, site_b)
        _, refused_id = chat_start(alice_b, "One more?")
        refused = Message.objects.get(pk=refused_id)
        assert (refused.status, refused.error_code) == (Message.Status.ERROR, "tokens_per_day")
        pid_a = site_pid(site_a)

        site_signal(site_a, signal.SIGKILL, timeout=5)

        wait_until(
            lambda: (
                not Reservation.objects.filter(user=alice).exists()
                and not Message.objects.filter(pk__in=reply_ids, status__in=Message.LIVE_STATUSES).exists()
            ),
            timeout=15,
            what="A's replies interrupted and its reservations released",
        )
        for reply in Message.objects.filter(pk__in=reply_ids):
            assert_interrupted_and_billed_once(reply, started_prices)
        api_call = UsageRecord.objects.get(kind=UsageRecord.Kind.API)
        assert api_call.estimated and api_call.prompt_tokens > 0
        assert api_call.cost == started_prices.cost(
            prompt_tokens=api_call.prompt_tokens, completion_tokens=api_call.completion_tokens
        )
        assert not process_rows(pid_a).exists()
        # The budget A held is Alice's again.
        upstream.script(Reply("Yes, go on."))
        conversation_id, reply_id = chat_start(alice_b, "One more?")
        _, status = reply_watch(alice_b, stream_url(conversation_id, reply_id))
        assert status == "complete"
        assert Message.objects.get(pk=reply_id).content == "Yes, go on."


def test_an_idle_server_process_sweeps_up_after_one_that_was_killed(
    django_db_setup, tmp_path, alice, catalog, upstream
):
    env = site_env(tmp_path, OPENAI_BASE_URL=upstream.base_url, STREAM_STALE_AFTER="2")
    upstream.default = Reply(chunks=WORDS, delay=0.05)

    with site_server(env) as site_a, site_server(env | {"SWEEP_INTERVAL": "0.5"}) as site_b:
        assert httpx.get(f"{site_b}/healthz", timeout=HTTP_TIMEOUT).status_code == 200  # B has served; now idle
        _, reply_id = chat_start(login(site_a, alice), "Tell me a story")
        wait_until(replies_under_way([reply_id], []), timeout=15, what="the reply under way")

        site_signal(site_a, signal.SIGKILL, timeout=5)

        wait_until(
            lambda: (
                not Reservation.objects.filter(user=alice).exists()
                and Message.objects.get(pk=reply_id).status == Message.Status.INTERRUPTED
            ),
            timeout=15,
            what="the idle process to mark the reply interrupted and release its budget",
        )
        assert_interrupted_and_billed_once(
            Message.objects.get(pk=reply_id), ChatModel.objects.get(model_id="gpt-4o-mini").prices()
        )


@pytest.fixture
def write_log(db):
    """Every row a statement inserts, updates or deletes in any table, recorded by PostgreSQL triggers."""
    tables = connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TABLE write_log (table_name text, operation text);
            CREATE FUNCTION write_log_add() RETURNS trigger AS $$
            BEGIN INSERT INTO write_log VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END
            $$ LANGUAGE plpgsql;
            """
        )
        for table in tables:
            cursor.execute(
                f'CREATE TRIGGER write_log AFTER INSERT OR UPDATE OR DELETE ON "{table}" '
                "FOR EACH ROW EXECUTE FUNCTION write_log_add()"
            )

    def writes() -> list[tuple[str, str]]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_name, operation FROM write_log")
            return cursor.fetchall()

    yield writes
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f'DROP TRIGGER write_log ON "{table}"')
        cursor.execute("DROP FUNCTION write_log_add CASCADE; DROP TABLE write_log")


@pytest.fixture
def quiet_site(django_db_setup, tmp_path, upstream):
    """A daphne process of its own, so that nothing but the test's requests runs in it (no sweep on its timer);
    quick keep-alives."""
    env = site_env(tmp_path, OPENAI_BASE_URL=upstream.base_url, STREAM_KEEPALIVE="0.2", SWEEP_INTERVAL="0")
    with site_server(env) as base_url:
        yield base_url


def test_opening_a_chat_whose_process_died_writes_nothing(quiet_site, alice, catalog, write_log):
    chat = make_conversation(alice)
    make_message(chat, "user", "Tell me a story")
    reply = make_message(
        chat,
        "assistant",
        "Once upon",
        status=Message.Status.STREAMING,
        model=chat.model,
        updated_at=timezone.now() - timedelta(minutes=5),
    )
    client = login(quiet_site, alice)
    assert write_log() != []  # logging in writes (the session, the last login): the log sees the server's writes
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM write_log")

    pages = [client.get("/"), client.get(f"/c/{chat.pk}/")]
    watched = []
    with client.stream("GET", stream_url(chat.pk, reply.pk)) as response:
        for line in response.iter_lines():  # until the watcher has looked at the reply and waits for more
            watched.append(line)
            if line == ": keep-alive" or len(watched) > 100:
                break

    assert [page.status_code for page in pages] == [200, 200]
    assert "Once upon" in pages[1].text
    assert watched[-1] == ": keep-alive" and "event: done" not in watched
    assert write_log() == []
    reply.refresh_from_db()
    assert reply.status == Message.Status.STREAMING  # left to the sweep
