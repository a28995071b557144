"""Versions in real Chromium, on a wide screen and a phone: regenerate, browse versions, edit, retry, continue.

The site runs under daphne against the fake upstream; what the model was sent
is read from the fake's request log.
"""

import pytest
from playwright.sync_api import Locator, Page, expect

from conversations.services.context import CONTINUE_PROMPT
from tests.fake_upstream import Reply
from tests.live.test_browser_chat import browser, last_reply, log_in, new_context, send  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {
    "1366px": {"viewport": {"width": 1366, "height": 800}},
    "390px": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(params=VIEWPORTS, ids=VIEWPORTS)
def page(request, new_context) -> Page:  # noqa: F811 (a page at each screen width)
    return new_context(**VIEWPORTS[request.param]).new_page()


def sent_turns(request) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request.json["messages"]]


def controls(message: Locator) -> Locator:
    """The controls shown just below a message."""
    return message.locator("xpath=following-sibling::div[contains(@class, 'message-controls')][1]")


def reply_streams_opened(page: Page) -> list[str]:
    """The reply streams the page will open from now on: none when every reply comes in the answer that
    started it (static/chat_send.js)."""
    opened = []
    page.on("request", lambda request: opened.append(request.url) if "/stream/" in request.url else None)
    return opened


def press(page: Page, locator: Locator) -> None:
    """Click a control the way its user would: it is on screen first."""
    locator.scroll_into_view_if_needed()
    expect(locator).to_be_in_viewport()
    locator.click()


def test_regenerate_makes_a_second_version_and_the_first_stays_reachable(page, alice, catalog, upstream):
    upstream.script(Reply("First answer."), Reply(chunks=["Second ", "answer."], first_delay=0.2, delay=0.1))
    log_in(page, alice)
    streams = reply_streams_opened(page)
    send(page, "Name a colour")
    reply = last_reply(page)
    expect(reply.locator(".markdown")).to_have_text("First answer.")

    press(page, controls(reply).get_by_role("button", name="Regenerate"))

    reply = last_reply(page)
    expect(reply.locator(".markdown")).to_have_text("Second answer.")
    expect(controls(reply).locator(".version-count")).to_have_text("2 / 2")
    expect(page.locator("article")).to_have_count(2)
    assert sent_turns(upstream.requests[1]) == [("user", "Name a colour")]
    assert streams == []

    press(page, controls(reply).get_by_role("button", name="Previous version"))

    reply = last_reply(page)
    expect(reply.locator(".markdown")).to_have_text("First answer.")
    expect(controls(reply).locator(".version-count")).to_have_text("1 / 2")
    page.reload()
    expect(last_reply(page).locator(".markdown")).to_have_text("First answer.")
    press(page, controls(last_reply(page)).get_by_role("button", name="Next version"))
    expect(last_reply(page).locator(".markdown")).to_have_text("Second answer.")


def test_an_edit_starts_a_branch_and_the_model_receives_only_that_branch(page, alice, catalog, upstream):
    upstream.script(Reply("Lisbon is lovely."), Reply("Take the tram."), Reply("Porto is lovely."))
    log_in(page, alice)
    send(page, "Where to in May?")
    expect(last_reply(page).locator(".markdown")).to_have_text("Lisbon is lovely.")
    send(page, "How do I get around?")
    expect(last_reply(page).locator(".markdown")).to_have_text("Take the tram.")
    question = page.locator("article.user").first

    press(page, controls(question).locator("summary", has_text="Edit"))
    edit_box = controls(question).get_by_role("textbox", name="Edited text")
    expect(edit_box).to_be_focused()
    edit_box.fill("Where to in June?")
    edit_box.press("Enter")

    expect(page.locator("article.user .content")).to_have_text(["Where to in June?"])
    expect(last_reply(page).locator(".markdown")).to_have_text("Porto is lovely.")
    expect(controls(page.locator("article.user")).locator(".version-count")).to_have_text("2 / 2")
    assert sent_turns(upstream.requests[2]) == [("user", "Where to in June?")]

    press(page, controls(page.locator("article.user").first).get_by_role("button", name="Previous version"))

    expect(page.locator("article .content")).to_have_text(
        ["Where to in May?", "Lisbon is lovely.", "How do I get around?", "Take the tram."]
    )


def test_retry_after_an_upstream_error(page, alice, catalog, upstream):
    upstream.script(Reply(chunks=["Half ", "an ", "answer"], cut_after=2), Reply("A whole answer."))
    log_in(page, alice)
    send(page, "Tell me")
    failed = last_reply(page)
    expect(failed.locator(".notice.error")).to_be_visible()

    press(page, controls(failed).get_by_role("button", name="Retry"))

    reply = last_reply(page)
    expect(reply.locator(".markdown")).to_have_text("A whole answer.")
    expect(controls(reply).locator(".version-count")).to_have_text("2 / 2")
    assert sent_turns(upstream.requests[1]) == [("user", "Tell me")]


def test_continue_after_a_length_cut_goes_on_in_the_same_reply(page, alice, catalog, upstream):
    rest = [" and", " the", " second", " half."]
    # Slow enough (2 s) that a loaded machine still shows the continuation live before it ends.
    upstream.script(Reply("The first half", finish_reason="length"), Reply(chunks=rest, first_delay=0.5, delay=0.5))
    log_in(page, alice)
    send(page, "Write a long line")
    reply = last_reply(page)
    expect(reply.get_by_text("The reply reached its length limit.")).to_be_visible()
    streams = reply_streams_opened(page)

    press(page, controls(reply).get_by_role("button", name="Continue"))

    reply = last_reply(page)
    expect(reply.locator(".content.streaming")).to_contain_text("The first half and")
    expect(reply.locator(".markdown")).to_have_text("The first half and the second half.")
    assert streams == []
    expect(page.locator("article")).to_have_count(2)
    expect(controls(reply).get_by_role("button", name="Regenerate")).to_be_visible()
    expect(controls(reply).get_by_role("button", name="Continue")).to_have_count(0)
    assert sent_turns(upstream.requests[1]) == [
        ("user", "Write a long line"),
        ("assistant", "The first half"),
        ("user", CONTINUE_PROMPT),
    ]
