"""Two daphne processes sharing PostgreSQL and Redis: a reply generated in one is watched and stopped from the other."""

import json
import os
import time
from itertools import accumulate

import pytest
import redis

from conversations.models import Message
from tests.fake_upstream import Reply
from tests.live.conftest import chat_start, delta_text, login, reply_watch, same_session, sse_events, stream_url
from tests.servers import site_rss_kb

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clients(two_sites, alice, catalog):
    """Alice logged in on site A, and the same session on site B."""
    site_a, site_b = two_sites
    client_a = login(site_a, alice)
    client_b = same_session(client_a, site_b)
    yield client_a, client_b
    client_a.close()
    client_b.close()


def test_a_reply_generated_in_one_process_streams_live_through_the_other(clients, upstream):
    client_a, client_b = clients
    words = [f"tok{i} " for i in range(40)]
    upstream.script(Reply(chunks=words, first_delay=0.2, delay=0.05))
    conversation_id, reply_id = chat_start(client_a, "Count to forty")

    deltas, status = reply_watch(client_b, stream_url(conversation_id, reply_id))

    assert "".join(text for _, text, _ in deltas) == "".join(words)
    assert status == "complete"
    assert len(deltas) > 5
    # Live: spread over the two seconds the upstream took, not handed over at the end.
    assert deltas[-1][0] - deltas[0][0] > 1.0
    # Each event id is the offset the watcher has after it, which a re-attach sends back.
    assert [int(event_id) for _, _, event_id in deltas] == list(accumulate(len(text) for _, text, _ in deltas))


def test_stop_through_one_process_ends_the_reply_generated_in_the_other(clients, upstream):
    client_a, client_b = clients
    words = [f"w{i} " for i in range(200)]  # ten seconds of reply
    upstream.script(Reply(chunks=words, delay=0.05))
    conversation_id, reply_id = chat_start(client_a, "Tell me a long story")

    text, status, stop = "", None, None
    with client_b.stream("GET", stream_url(conversation_id, reply_id)) as response:
        for event, data, _ in sse_events(response):
            if event == "delta":
                text += delta_text(data)
                if stop is None and len(text) > 20:
                    stop = client_b.post(f"/c/{conversation_id}/messages/{reply_id}/stop/")
            elif event == "done":
                status = json.loads(data)["status"]
                break

    assert stop is not None and stop.status_code == 302
    assert status == "stopped"
    upstream.wait_for_disconnects(1)  # the upstream stream was closed, so no more tokens are paid for
    assert upstream.requests[0].chunks_sent < len(words)
    reply = Message.objects.get(pk=reply_id)
    assert reply.status == Message.Status.STOPPED
    assert reply.content == text  # the watcher saw every character that was kept
    assert "".join(words).startswith(text)
    assert 20 < len(text) < len("".join(words))


def test_a_watcher_moving_to_the_other_process_gets_exactly_the_rest(clients, upstream):
    client_a, client_b = clients
    words = [f"part{i} " for i in range(40)]
    upstream.script(Reply(chunks=words, first_delay=0.1, delay=0.05))
    conversation_id, reply_id = chat_start(client_a, "Tell me in parts")
    url = stream_url(conversation_id, reply_id)

    seen, last_id = "", None
    with client_a.stream("GET", url) as response:
        for event, data, event_id in sse_events(response):
            if event == "delta":
                seen += delta_text(data)
                last_id = event_id
            if len(seen) > 40 or event == "done":
                break  # the connection to A drops mid-reply
    deltas, status = reply_watch(client_b, url, **{"Last-Event-ID": last_id})
    rest = "".join(text for _, text, _ in deltas)

    assert int(last_id) == len(seen)
    assert len(seen) < len("".join(words))
    assert seen + rest == "".join(words)
    assert status == "complete"


def redis_subscriptions() -> dict[bytes, int]:
    """Every pub/sub channel in Redis with its number of subscribers."""
    with redis.Redis.from_url(os.environ["REDIS_URL"]) as client:
        channels = client.pubsub_channels()
        return dict(client.pubsub_numsub(*channels)) if channels else {}


def first_event(client, url: str) -> str:
    """Attach, wait for the first event (the text so far, or the end), and drop the connection."""
    with client.stream("GET", url) as response:
        for event, _, _ in sse_events(response):
            return event
    raise AssertionError("the stream ended without an event")


def test_watchers_that_come_and_go_leave_no_subscription_or_memory_behind(clients, two_sites, upstream):
    client_a, client_b = clients
    upstream.default = Reply(chunks=[f"w{i} " for i in range(100)], first_delay=0.1, delay=0.05)  # 5 s a reply

    def cycles(count: int, deadline: float) -> None:
        """Watchers in both processes attach to a reply generated in A and leave; pages of its chat open and close."""
        conversation_id, reply_id = chat_start(client_a, "Talk for a while")
        for i in range(count):
            assert time.monotonic() < deadline, f"only {i} of {count} cycles in time"
            if first_event(client_b if i % 2 else client_a, stream_url(conversation_id, reply_id)) == "done":
                conversation_id, reply_id = chat_start(client_a, "Talk for a while")
            if i % 10 == 0:
                with client_b.stream("GET", f"/c/{conversation_id}/events/") as page:
                    next(page.iter_lines())  # the page listens
        # Watched to its end from the other process, as a tab left open would.
        _, status = reply_watch(client_b, stream_url(conversation_id, reply_id))
        assert status == "complete"

    # Both processes have watched, in-process and across, and their allocators have warmed up.
    cycles(300, deadline=time.monotonic() + 120)
    subscriptions, rss = redis_subscriptions(), {site: site_rss_kb(site) for site in two_sites}

    cycles(1_000, deadline=time.monotonic() + 300)

    assert redis_subscriptions() == subscriptions
    # Each watcher's channel left behind cost 3.5 KiB; what remains is the allocator settling
    # (it grows less with every thousand watchers: 1.2, 0.7, 0.2, 0.04 MiB here).
    growth = {site: site_rss_kb(site) - rss[site] for site in two_sites}
    assert all(kib < 2 * 1024 for kib in growth.values()), f"RSS growth in KiB: {growth}"
