"""Versions across two daphne processes sharing PostgreSQL and Redis: a regenerated or continued reply generated in
one streams live to a watcher in the other, and Stop from the other ends it."""

import pytest

from conversations.models import Message
from tests.fake_upstream import Reply
from tests.live.conftest import chat_start, delta_text, login, reply_watch, same_session, sse_events, stream_url

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


def finished(client, conversation_id: int, reply_id: int) -> None:
    _, status = reply_watch(client, stream_url(conversation_id, reply_id))
    assert status == "complete"


def test_a_regenerated_reply_streams_through_the_other_process_and_stops_from_it(clients, upstream):
    client_a, client_b = clients
    words = [f"w{i} " for i in range(200)]  # ten seconds of reply
    upstream.script(Reply("First."), Reply(chunks=words, first_delay=0.2, delay=0.05))
    conversation_id, first_id = chat_start(client_a, "Tell me a story")
    finished(client_a, conversation_id, first_id)

    response = client_a.post(f"/c/{conversation_id}/messages/{first_id}/regenerate/")
    assert response.status_code == 302
    regenerated = Message.objects.filter(role=Message.Role.ASSISTANT).exclude(pk=first_id).get()
    text, status, stop = "", None, None
    with client_b.stream("GET", stream_url(conversation_id, regenerated.pk)) as stream:
        for event, data, _ in sse_events(stream):
            if event == "delta":
                text += delta_text(data)
                if stop is None and len(text) > 20:
                    stop = client_b.post(f"/c/{conversation_id}/messages/{regenerated.pk}/stop/")
            elif event == "done":
                status = data
                break

    assert stop is not None and stop.status_code == 302
    assert '"stopped"' in status
    regenerated.refresh_from_db()
    assert regenerated.status == Message.Status.STOPPED
    assert regenerated.content.startswith(text) and len(regenerated.content.split()) < len(words)
    assert Message.objects.get(pk=first_id).content == "First."


def test_a_continued_reply_streams_only_its_new_text_to_a_watcher_in_the_other_process(clients, upstream):
    client_a, client_b = clients
    rest = [f" more{i}" for i in range(20)]
    upstream.script(Reply("The first half", finish_reason="length"), Reply(chunks=rest, first_delay=0.2, delay=0.05))
    conversation_id, reply_id = chat_start(client_a, "Write a long line")
    finished(client_a, conversation_id, reply_id)

    response = client_a.post(f"/c/{conversation_id}/messages/{reply_id}/continue/")
    assert response.status_code == 302
    deltas, status = reply_watch(client_b, f"{stream_url(conversation_id, reply_id)}?offset={len('The first half')}")

    assert "".join(text for _, text, _ in deltas) == "".join(rest)
    assert status == "complete"
    assert Message.objects.get(pk=reply_id).content == "The first half" + "".join(rest)
