"""The chat page in real Chromium against the site under daphne and the fake upstream."""

import html
import itertools
import os
import re
import time

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from conversations.models import Conversation, Message
from tests.conftest import PASSWORD
from tests.fake_upstream import Reply, Status

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Records the live text of every streaming reply as the page changes, so a test can
# read what the user saw just before the finished reply replaced it.
RECORD_LIVE_TEXT = """
window.liveText = {};
new MutationObserver(() => {
  for (const content of document.querySelectorAll("article[id] .content.streaming")) {
    window.liveText[content.closest("article").id] = content.textContent;
  }
}).observe(document, { childList: true, subtree: true, characterData: true });
"""
LIVE_REPLY_TEXT = """() => {
  const reply = [...document.querySelectorAll("article.assistant")].pop();
  return reply?.querySelector(".content.streaming")?.textContent ?? null;
}"""

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def browser() -> Browser:
    with pytest.MonkeyPatch.context() as patch:
        # Between sync calls Playwright leaves its event loop marked as running in this
        # thread, and Django then refuses the ORM calls of fixtures, tests and the database
        # flush. Nothing runs concurrently on that loop while the test's code does.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium"),
                headless=True,
                args=CHROMIUM_ARGS,
            )
            yield browser
            browser.close()


@pytest.fixture
def new_context(browser, live_site):
    """Make browser contexts on the live site; each is closed after the test, failing it on JavaScript errors."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def make(**options) -> BrowserContext:
        context = browser.new_context(base_url=live_site, **options)
        context.set_default_timeout(10_000)
        context.on("weberror", lambda error: errors.append(str(error.error)))
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(new_context) -> Page:
    return new_context().new_page()


def log_in(page: Page, user) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()


def send(page: Page, text: str) -> None:
    composer = page.get_by_role("textbox", name="Message")
    composer.fill(text)
    composer.press("Enter")


def last_reply(page: Page) -> Locator:
    return page.locator("article.assistant").last


def live_samples(page: Page, *, seconds: float = 10.0) -> list[str]:
    """The streaming reply's text, read every 50 ms until it is replaced by the finished reply."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = page.evaluate(LIVE_REPLY_TEXT)
        if text is None and samples:
            return samples
        if text is not None:
            samples.append(text)
        page.wait_for_timeout(50)
    raise AssertionError(f"the reply was still streaming after {seconds} s: {samples[-1:]}")


def test_a_reply_streams_in_then_shows_as_markdown(page, alice, catalog, upstream, live_site):
    chunks = ["# Title\n\n", *(f"word{i} " for i in range(30)), "\n\n```python\n", "print(1)\n", "```\n"]
    full = "".join(chunks)
    upstream.script(Reply(chunks=chunks, first_delay=0.2, delay=0.05))
    log_in(page, alice)

    send(page, "Show me some Markdown, please")

    expect(page.locator("article.user")).to_have_text("Show me some Markdown, please")
    samples = live_samples(page)
    growing = [text for i, text in enumerate(samples) if text and text != samples[i - 1]]
    assert len(growing) >= 3, f"the reply did not grow in steps: {samples}"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(samples))
    assert any(0 < len(text) < len(full) for text in samples)
    assert full.startswith(samples[-1])

    reply = last_reply(page)
    expect(reply.locator(".markdown h1")).to_have_text("Title")
    code = reply.locator(".markdown pre code")
    expect(code).to_have_text("print(1)")
    expect(code.locator("span[class]").first).to_be_attached()  # coloured (by highlight.js in the browser)
    expect(reply.locator(".markdown pre").get_by_role("button", name="Copy")).to_be_visible()

    conversation = Conversation.objects.get()
    expect(page).to_have_url(f"{live_site}/c/{conversation.pk}/")
    chats = page.get_by_role("navigation", name="Chats")
    expect(chats.get_by_role("link")).to_have_text(["Show me some Markdown, please"])
    expect(chats.get_by_role("link")).to_have_attribute("aria-current", "page")


def test_a_follow_up_in_the_same_chat_streams_its_reply_too(page, alice, catalog, upstream):
    parts = [f"more{i} " for i in range(30)]
    upstream.script(Reply("First answer."), Reply(chunks=parts, first_delay=0.2, delay=0.05))
    log_in(page, alice)
    send(page, "First question")
    expect(last_reply(page).locator(".markdown")).to_have_text("First answer.")

    send(page, "Second question")

    expect(page.locator("article.user")).to_have_text(["First question", "Second question"])
    reply = last_reply(page)
    expect(reply.locator(".content.streaming"), "the follow-up's reply does not stream in").to_contain_text("more3 ")
    expect(reply.locator(".markdown")).to_have_text("".join(parts).strip())


def test_a_long_reply_keeps_its_latest_text_the_composer_and_the_chat_list_on_screen(page, alice, catalog, upstream):
    upstream.script(Reply(chunks=[f"Line {i}\n\n" for i in range(60)], delay=0.05))
    log_in(page, alice)

    send(page, "Give me sixty lines")

    reply = last_reply(page)
    expect(reply.locator(".content.streaming")).to_contain_text("Line 30")
    # Still streaming for another second and a half: look now.
    on_screen = {
        "the end of the reply being written": reply.locator(".typing"),
        "Stop, in Send's place": page.get_by_role("button", name="Stop"),
        "the composer": page.get_by_role("textbox", name="Message"),
        "the chat list": page.get_by_role("link", name="New chat"),
    }
    for name, locator in on_screen.items():
        expect(locator, f"{name} is off screen").to_be_in_viewport(timeout=1_000)


def test_stop_ends_the_reply_and_keeps_its_text(page, alice, catalog, upstream):
    words = [f"w{i} " for i in range(200)]  # ten seconds of reply
    upstream.script(Reply(chunks=words, delay=0.05))
    log_in(page, alice)
    send(page, "Tell me a long story")
    reply = last_reply(page)
    expect(reply.locator(".content.streaming")).to_contain_text("w5 ")
    before = page.evaluate(LIVE_REPLY_TEXT)

    page.get_by_role("button", name="Stop").click()

    expect(reply.get_by_text("Stopped.")).to_be_visible()
    upstream.wait_for_disconnects(1)
    shown = reply.locator(".markdown").inner_text()
    page.wait_for_timeout(500)
    assert reply.locator(".markdown").inner_text() == shown, "the reply went on growing after Stop"
    assert shown.split() == [word.strip() for word in words[: len(shown.split())]]
    assert len(before.split()) <= len(shown.split()) < len(words)
    expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    stored = Message.objects.get(role=Message.Role.ASSISTANT)
    assert stored.status == Message.Status.STOPPED
    assert stored.content.split() == shown.split()


def test_a_page_reloaded_mid_reply_shows_the_text_so_far_then_continues(page, alice, catalog, upstream):
    parts = [f"part{i} " for i in range(80)]  # four seconds of reply
    full = "".join(parts)
    upstream.script(Reply(chunks=parts, delay=0.05))
    page.add_init_script(RECORD_LIVE_TEXT)
    log_in(page, alice)
    send(page, "Tell me in parts")
    expect(last_reply(page).locator(".content.streaming")).to_contain_text("part10 ")
    page.wait_for_timeout(300)  # past a flush of the text so far to the database

    reload = page.reload()

    reply = Message.objects.get(role=Message.Role.ASSISTANT)
    served = re.search(rf'id="message-{reply.pk}".*?<div class="content streaming">(.*?)</div>', reload.text(), re.S)
    assert served, "the reloaded page does not show the reply as streaming"
    so_far = html.unescape(served.group(1))
    assert so_far.startswith("part0 part1 ") and full.startswith(so_far) and len(so_far) < len(full)
    reply_view = last_reply(page)
    expect(reply_view.locator(".markdown")).to_have_text(full.strip())
    # What streamed into the page after the reload, just before the finished reply replaced it.
    assert page.evaluate("window.liveText")[f"message-{reply.pk}"] == full
    reply.refresh_from_db()
    assert reply.status == Message.Status.COMPLETE and reply.content == full


XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def test_html_in_messages_and_replies_never_runs(page, alice, catalog, upstream):
    reply_text = f"{XSS}\n\n[link](javascript:window.pwned=3)\n\n<svg onload=alert(1)></svg> and `<b>code</b>`"
    chunks = [reply_text[i : i + 8] for i in range(0, len(reply_text), 8)]
    upstream.script(Reply(chunks=chunks, first_delay=0.2, delay=0.1))
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, alice)

    send(page, XSS)

    expect(page.locator("article.user")).to_have_text(XSS)
    reply = last_reply(page)
    expect(reply.locator(".content.streaming")).to_contain_text("<img src=x")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#messages script, #messages img, #messages svg").count() == 0
    expect(reply.locator(".markdown")).to_contain_text("and <b>code</b>")
    assert page.locator("#messages script, #messages img, #messages svg, #messages b").count() == 0
    link = reply.locator(".markdown a", has_text="link")
    if link.count():
        link.click()
        page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert not (link.count() and (link.get_attribute("href") or "").strip().lower().startswith("javascript:"))

    page.reload()  # the page as the server renders it, not as htmx built it

    expect(page.locator("article.user")).to_have_text(XSS)
    expect(last_reply(page).locator(".markdown")).to_contain_text(XSS)
    assert page.locator("#messages script, #messages img, #messages svg").count() == 0
    assert page.evaluate("window.pwned") is None
    assert dialogs == []


def test_new_chat_rename_and_delete_update_the_chat_list(page, alice, catalog, upstream, live_site):
    upstream.script(Reply("First answer."), Reply("Second answer."))
    log_in(page, alice)
    chats = page.get_by_role("navigation", name="Chats")
    expect(chats).to_contain_text("No chats yet.")
    send(page, "First chat")
    expect(last_reply(page).locator(".markdown")).to_have_text("First answer.")

    page.get_by_role("link", name="New chat").click()

    expect(page).to_have_url(f"{live_site}/")
    expect(page.get_by_role("heading", name="New chat")).to_be_visible()
    expect(page.locator("#messages article")).to_have_count(0)
    expect(page.get_by_text("Send a message to start.")).to_be_visible()
    send(page, "Second chat")
    expect(last_reply(page).locator(".markdown")).to_have_text("Second answer.")
    expect(page.locator("#messages article")).to_have_count(2)
    expect(chats.get_by_role("link")).to_have_text(["Second chat", "First chat"])

    page.get_by_role("textbox", name="Chat name").fill("Renamed chat")
    page.get_by_role("button", name="Rename").click()

    expect(chats.get_by_role("link")).to_have_text(["Renamed chat", "First chat"])
    page.reload()
    expect(page.get_by_role("textbox", name="Chat name")).to_have_value("Renamed chat")
    expect(page).to_have_title(re.compile("^Renamed chat"))

    confirms = []
    page.once("dialog", lambda dialog: (confirms.append(dialog.message), dialog.accept()))
    page.locator("header.chat-header").get_by_label("Options for Renamed chat").click()  # Delete is in the menu
    page.get_by_role("button", name="Delete chat").click()

    expect(page).to_have_url(f"{live_site}/")
    expect(chats.get_by_role("link")).to_have_text(["First chat"])
    assert confirms == ["Delete this chat and all its messages?"]
    assert list(Conversation.objects.values_list("title", flat=True)) == ["First chat"]


def test_a_failed_reply_says_what_went_wrong(page, alice, catalog, upstream):
    upstream.script(Status.invalid_api_key())
    log_in(page, alice)

    send(page, "Hello?")

    reply = last_reply(page)
    expect(reply.get_by_role("alert")).to_have_text(
        "The model provider rejected the site's API key. An administrator needs to check OPENAI_API_KEY."
    )
    expect(page.locator("#toast")).to_be_hidden()
    expect(page.locator("article.user")).to_have_text("Hello?")
    assert "Incorrect API key" not in page.content()


def test_on_a_phone_the_composer_fits_and_sends(new_context, alice, catalog, upstream):
    upstream.script(Reply("Hi from a small screen."))
    page = new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    log_in(page, alice)
    composer = page.get_by_role("textbox", name="Message")
    send_button = page.get_by_role("button", name="Send")

    for control in (composer, send_button):
        expect(control).to_be_in_viewport()
        box = control.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{control} sticks out of the screen: {box}"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
    composer.fill("Hello from my phone")
    send_button.tap()

    expect(last_reply(page).locator(".markdown")).to_have_text("Hi from a small screen.")
    expect(send_button).to_be_in_viewport()


def luminance(css_colour: str) -> float:
    red, green, blue = (int(value) / 255 for value in re.findall(r"\d+", css_colour)[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_page_follows_the_light_or_dark_colour_scheme(new_context, alice, catalog, scheme):
    page = new_context(color_scheme=scheme).new_page()
    log_in(page, alice)

    background = luminance(page.evaluate("getComputedStyle(document.body).backgroundColor"))
    text = luminance(page.evaluate("getComputedStyle(document.body).color"))

    if scheme == "dark":
        assert background < 0.2 and text > 0.7
    else:
        assert background > 0.8 and text < 0.3
