"""Replies drawn as Markdown while they stream, and the controls around a streaming reply, in real Chromium.

The site runs under daphne against the fake upstream, whose scripted chunks arrive as
separate SSE frames; each test runs on a desktop screen and on a phone.
"""

from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from playwright.sync_api import Page, expect

from conversations.models import Conversation, Message
from tests.conftest import make_conversation, make_message
from tests.fake_upstream import Reply
from tests.live import test_browser_chat as chat_page
from tests.live.test_browser_chat import last_reply, log_in, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# The chat page tests' Chromium and its contexts (which fail a test on any JavaScript error).
browser = chat_page.browser
new_context = chat_page.new_context

SCREENS = {
    "desktop": {"viewport": {"width": 1366, "height": 768}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(params=SCREENS.values(), ids=SCREENS.keys())
def page(request, new_context) -> Page:
    return new_context(**request.param).new_page()


# The rendered view of the reply being streamed, as it was at each change, until the finished reply replaced it.
RECORD_LIVE_VIEW = """
window.liveViews = [];
new MutationObserver(() => {
  const view = document.querySelector("article[data-stream-url] .content.markdown");
  if (!view) return;
  const drawn = { html: view.innerHTML, height: view.getBoundingClientRect().height, text: view.textContent };
  if (drawn.html !== window.liveViews.at(-1)?.html) window.liveViews.push(drawn);
}).observe(document, { childList: true, subtree: true, characterData: true });
"""

STREAMING_REPLY_HAS = """(selector) => {
  const reply = document.querySelector("article.assistant[data-stream-url]");
  return Boolean(reply?.querySelector(`.content.markdown ${selector}`));
}"""


def streaming(page: Page) -> bool:
    return page.evaluate("() => Boolean(document.querySelector('article.assistant[data-stream-url]'))")


def test_lists_tables_and_code_appear_formatted_before_the_reply_ends(page, alice, catalog, upstream):
    chunks = [
        "## Plan\n\n",
        "- pack\n",
        "- travel\n\n",
        "| day | where |\n",
        "|---|---|\n",
        "| 1 | Oslo |\n\n",
        "```python\n",
        "def greet():\n",
        "    return 'hi'\n",
        *(f"# step {i}\n" for i in range(40)),  # the fence is still open for two seconds
        "```\n\nDone.",
    ]
    upstream.script(Reply(chunks=chunks, first_delay=0.2, delay=0.05))
    page.add_init_script(RECORD_LIVE_VIEW)
    log_in(page, alice)

    send(page, "Plan my trip")

    for selector in ("h2", "li", "table td", "pre code span[class]"):
        page.wait_for_function(STREAMING_REPLY_HAS, arg=selector, timeout=10_000)
    assert streaming(page), "the reply had ended before its list, table and coloured code were drawn"
    reply = last_reply(page)
    expect(reply.locator(".content.markdown li")).to_have_text(["pack", "travel"])
    expect(reply.locator(".content.markdown pre").get_by_role("button", name="Copy", exact=True)).to_be_visible()
    expect(reply.locator(".usage")).to_be_visible()
    expect(reply.locator(".content.markdown > p")).to_have_text("Done.")
    views = page.evaluate("window.liveViews")
    # An open fence is drawn as a code block, never as backticks; no Markdown mark-up shows as text.
    with_open_fence = [view for view in views if "def greet" in view["text"] and "Done." not in view["text"]]
    assert with_open_fence and all("<pre>" in view["html"] for view in with_open_fence)
    assert not [view["text"] for view in views if "```" in view["text"] or "##" in view["text"]]


def test_the_finished_reply_is_the_live_reply_unchanged_and_the_view_stays_at_its_end(page, alice, catalog, upstream):
    text = (
        "# Notes\n\n"
        + "".join(f"{i}. point {i} with **bold** and `code`\n" for i in range(1, 25))
        + "\n| a | b |\n|:--|--:|\n| 1 | 2 |\n\n```js\nconst x = 1;\n```\n\n> quoted [link](https://example.com)\n"
    )
    upstream.script(Reply(chunks=[text[i : i + 12] for i in range(0, len(text), 12)], first_delay=0.2, delay=0.03))
    page.add_init_script(RECORD_LIVE_VIEW)
    log_in(page, alice)

    send(page, "Take notes")

    reply = last_reply(page)
    expect(reply.locator(".usage")).to_be_visible()  # the finished reply, with its footer
    live = page.evaluate("window.liveViews.at(-1)")
    final = reply.locator(".content.markdown").evaluate(
        "view => ({ html: view.innerHTML, height: view.getBoundingClientRect().height })"
    )
    assert final == {"html": live["html"], "height": live["height"]}
    assert final["html"].count("<li>") == 24 and "<table>" in final["html"] and "hljs-" in final["html"]
    expect(reply.locator(".content.markdown td").last).to_have_css("text-align", "right")  # `--:` in the Markdown
    # The footer made the chat taller when the reply ended: the view still shows the end of it.
    expect(reply.locator(".usage")).to_be_in_viewport()
    assert page.locator("#messages").evaluate("m => m.scrollHeight - m.scrollTop - m.clientHeight") < 2


PAYLOADS = [
    "<script>window.pwned = 1</script>",
    '<img src=x onerror="window.pwned = 2">',
    "[plain](javascript:window.pwned=3)",
    "[mixed case](JaVaScRiPt:window.pwned=4)",
    "[entities](&#x6A;avascript:window.pwned=5)",
    "<javascript:window.pwned=6>",
    '<svg onload="window.pwned = 7"></svg>',
    '<a href="javascript:window.pwned=8">raw link</a>',
    '![image](x" onerror="window.pwned=9)',
    '<iframe srcdoc="<script>parent.pwned=10</script>"></iframe>',
    '<div onmouseover="window.pwned = 11">raw block</div>',
    "| cell |\n|---|\n| <img src=x onerror=window.pwned=12> |",
    "[data](data:text/html;base64,PHNjcmlwdD5wYXJlbnQucHduZWQ9MTM8L3NjcmlwdD4=)",
    '[title](https://example.com "a\\" onmouseover=\\"window.pwned=14")',
    "```html\n<img src=x onerror=window.pwned=15>\n```",
]
# Anything in the chat that could run: an element, a handler attribute, a link that is not a web address.
RUNNABLE_IN_CHAT = """() => {
  const found = [];
  // The site's own controls under each message (Regenerate, Edit: .message-controls) are forms by design.
  for (const element of document.querySelectorAll("#messages *:not(.message-controls, .message-controls *)")) {
    if (element.matches("script, img, svg, iframe, object, embed, style, link, form:not(noscript form)")) {
      found.push(element.outerHTML);
    }
    for (const attribute of element.attributes) {
      const address = /^(href|src|action|formaction)$/.test(attribute.name);
      if (attribute.name.startsWith("on") || (address && !/^(https?:|mailto:|\\/)/i.test(attribute.value))) {
        found.push(`${element.tagName} ${attribute.name}=${attribute.value}`);
      }
    }
  }
  return found;
}"""
WATCH_FOR_RUNNABLE = """
window.runnableSeen = [];
new MutationObserver(() => window.runnableSeen.push(...window.runnableInChat())).observe(document, {
  childList: true, subtree: true, attributes: true, characterData: true,
});
"""


def test_payloads_split_across_frames_never_run(page, alice, catalog, upstream):
    text = "\n\n".join(PAYLOADS)
    upstream.script(Reply(chunks=[text[i : i + 3] for i in range(0, len(text), 3)], first_delay=0.2, delay=0.01))
    page.add_init_script(f"window.runnableInChat = {RUNNABLE_IN_CHAT};\n{WATCH_FOR_RUNNABLE}")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, alice)

    send(page, "Say something dangerous")

    reply = last_reply(page)
    page.wait_for_function(STREAMING_REPLY_HAS, arg="table", timeout=10_000)
    expect(reply.locator(".usage")).to_be_visible()
    markdown = reply.locator(".content.markdown")
    for link in markdown.locator("a").all():
        link.hover()
    page.wait_for_timeout(300)  # any handler that was planted would have run by now
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("window.runnableSeen") == []
    assert page.evaluate(RUNNABLE_IN_CHAT) == []
    assert dialogs == []
    # The reader sees the payloads as text.
    expect(markdown).to_contain_text("<script>window.pwned = 1</script>")
    expect(markdown).to_contain_text('<div onmouseover="window.pwned = 11">raw block</div>')
    hrefs = markdown.locator("a").evaluate_all("links => links.map(link => link.getAttribute('href'))")
    assert hrefs == ["https://example.com"]


def test_stop_takes_sends_place_while_a_reply_streams_and_esc_stops_it(page, alice, catalog, upstream):
    words = [f"w{i} " for i in range(200)]  # ten seconds of reply
    upstream.script(Reply(chunks=words, delay=0.05))
    log_in(page, alice)
    send_button = page.get_by_role("button", name="Send")
    composer = page.get_by_role("textbox", name="Message")

    send(page, "Tell me a long story")

    expect(last_reply(page).locator(".content.streaming")).to_contain_text("w5 ")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    expect(send_button).to_be_hidden()
    stop_box = stop.bounding_box()
    # Enter while the reply streams keeps what was typed for later, and is never refused.
    composer.fill("Next question")
    composer.press("Enter")
    page.wait_for_timeout(300)
    expect(page.locator("article.user")).to_have_count(1)
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(composer).to_have_value("Next question")

    composer.press("Escape")

    reply = last_reply(page)
    expect(reply.get_by_text("Stopped.")).to_be_visible()
    upstream.wait_for_disconnects(1)
    expect(send_button).to_be_visible()
    expect(stop).to_be_hidden()
    send_box = send_button.bounding_box()
    assert abs(stop_box["x"] + stop_box["width"] - send_box["x"] - send_box["width"]) < 2
    assert abs(stop_box["y"] - send_box["y"]) < 2, "Stop is not where Send is"
    assert Message.objects.get(role=Message.Role.ASSISTANT).status == Message.Status.STOPPED
    composer.press("Enter")
    expect(page.locator("article.user")).to_have_text(["Tell me a long story", "Next question"])


def test_a_reader_who_scrolled_up_stays_and_can_jump_to_the_latest(page, alice, catalog, upstream):
    upstream.script(Reply(chunks=[f"Line {i}\n\n" for i in range(80)], first_delay=0.2, delay=0.05))
    log_in(page, alice)
    messages = page.locator("#messages")
    jump = page.get_by_role("button", name="Jump to latest")

    send(page, "Give me eighty lines")

    reply = last_reply(page)
    expect(reply.locator(".content.markdown")).to_contain_text("Line 30")
    expect(jump).to_be_hidden()  # following the reply needs no button
    messages.evaluate("m => m.scrollTo(0, 0)")
    expect(jump).to_be_visible()
    assert streaming(page)
    assert messages.evaluate("m => m.scrollTop") == 0, "the view was pulled away from where the reader is"

    jump.click()

    assert messages.evaluate("m => m.scrollHeight - m.scrollTop - m.clientHeight") < 2
    expect(jump).to_be_hidden()
    expect(reply.locator(".usage")).to_be_in_viewport()  # followed to the end of the reply


def test_copy_a_whole_message_or_a_code_block(page, alice, catalog, upstream):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    answer = "Use **this**:\n\n```python\nprint('hi')\n```\n"
    upstream.script(Reply(chunks=[answer[:9], answer[9:]]))
    log_in(page, alice)
    send(page, "How do I say hi?")
    reply = last_reply(page)
    expect(reply.locator(".usage")).to_be_visible()
    clipboard = "() => navigator.clipboard.readText()"

    reply.get_by_role("button", name="Copy message").click()

    expect(reply.get_by_role("button", name="Copy message")).to_have_attribute("data-state", "copied")
    assert page.evaluate(clipboard) == answer  # the Markdown as written
    page.locator("article.user").get_by_role("button", name="Copy message").click()
    assert page.evaluate(clipboard) == "How do I say hi?"
    code_copy = reply.locator("pre").get_by_role("button", name="Copy", exact=True)
    code_copy.click()
    assert page.evaluate(clipboard) == "print('hi')\n"
    button, code = code_copy.bounding_box(), reply.locator("pre code").bounding_box()
    assert button["y"] + button["height"] <= code["y"], "Copy sits on top of the code"


def test_a_reply_started_in_another_tab_is_shown_and_its_refusal_clears_when_it_ends(page, alice, catalog, upstream):
    words = [f"w{i} " for i in range(100)]  # five seconds of reply
    upstream.script(Reply("First answer."), Reply(chunks=words, delay=0.05))
    log_in(page, alice)
    send(page, "First question")
    expect(last_reply(page).locator(".usage")).to_be_visible()
    other_tab = page.context.new_page()
    other_tab.goto(page.url)

    send(page, "Tell me a long story")
    expect(last_reply(page).locator(".content.streaming")).to_contain_text("w3 ")
    send(other_tab, "Me too")

    refusal = other_tab.locator("#composer-errors").get_by_role("alert")
    expect(refusal).to_contain_text("Wait for the reply to finish")
    expect(last_reply(other_tab).locator(".content.markdown")).to_contain_text("w10 ")
    expect(other_tab.locator("article.user")).to_have_text(["First question", "Tell me a long story"])
    other_tab.get_by_role("button", name="Stop").click()
    expect(last_reply(page).get_by_text("Stopped.")).to_be_visible()
    expect(last_reply(other_tab).get_by_text("Stopped.")).to_be_visible()
    expect(refusal).to_have_count(0)
    expect(other_tab.get_by_role("textbox", name="Message")).to_have_value("Me too")
    expect(other_tab.get_by_role("button", name="Send")).to_be_visible()


def test_without_javascript_replies_show_formatted_and_safe_and_a_streaming_one_offers_stop(
    new_context, alice, catalog
):
    chat = make_conversation(alice, title="No script")
    make_message(chat, "user", "Hi")
    make_message(chat, "assistant", "# Title\n\n- one\n\n<script>window.pwned=1</script>", model=chat.model)
    make_message(chat, "user", "More")
    live = make_message(chat, "assistant", "So far", status=Message.Status.STREAMING, model=chat.model)
    page = new_context(java_script_enabled=False, **SCREENS["phone"]).new_page()
    log_in(page, alice)

    page.goto(f"/c/{chat.pk}/")

    stored = page.locator("article.assistant").first
    expect(stored.locator("h1")).to_have_text("Title")
    expect(stored.locator("li")).to_have_text("one")
    expect(stored).to_contain_text("<script>window.pwned=1</script>")
    expect(page.locator("#messages script")).to_have_count(0)
    streaming_reply = page.locator(f"#message-{live.pk}")
    expect(streaming_reply).to_contain_text("So far")
    expect(streaming_reply.get_by_role("button", name="Stop")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_have_count(1)
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_a_long_chat_opens_at_its_end_with_every_reply_drawn_like_a_live_one(page, alice, catalog):
    chat = make_conversation(alice, title="Long chat")
    for i in range(12):
        make_message(chat, "user", f"Question {i}")
        make_message(chat, "assistant", f"Answer {i}:\n\n```python\nprint({i})\n```\n", model=chat.model)

    log_in(page, alice)
    page.goto(f"/c/{chat.pk}/")

    replies = page.locator("article.assistant")
    expect(replies.last.locator(".usage")).to_be_in_viewport()
    expect(replies.locator("pre .code-bar")).to_have_count(12)  # the older ones too, once the page was idle
    expect(replies.first.locator("pre code span.hljs-built_in")).to_have_text("print")
    expect(replies.last.locator(".usage")).to_be_in_viewport()


RENDERER_SCRIPTS = [
    "vendor/markdown-it/markdown-it.umd.min.js",
    "vendor/dompurify/purify.min.js",
    "vendor/highlight.js/highlight.min.js",
    "chat_markdown.js",
]


@pytest.fixture(scope="module")
def renderer(browser) -> Page:
    """A blank page with the chat's Markdown renderer and nothing else."""
    context = browser.new_context()
    page = context.new_page()
    static = Path(settings.BASE_DIR) / "static"
    for script in RENDERER_SCRIPTS:
        page.add_script_tag(path=static / script)
    yield page
    context.close()


# Draw the text as it streams (each prefix in turn, in one view) and at once (in another); and, for reference,
# the whole text through the same parser and sanitiser in one piece, without keeping blocks between frames.
# The HTML of the three, and anything runnable or outside the allow-list that ever appeared in the live view.
DRAW_LIVE_AND_AT_ONCE = """([text, cuts, allowed]) => {
  const found = [];
  const live = document.createElement("div");
  for (const cut of [...cuts, text.length]) {
    renderMarkdown(live, text.slice(0, cut));
    for (const element of live.querySelectorAll("*")) {
      if (!allowed.includes(element.tagName.toLowerCase())) found.push(element.tagName);
      for (const { name, value } of element.attributes) {
        if (name.startsWith("on") || /^\\s*(javascript|vbscript|data):/i.test(value)) found.push(`${name}=${value}`);
      }
    }
  }
  const atOnce = document.createElement("div");
  renderMarkdown(atOnce, text);
  const reference = document.createElement("div");
  reference.append(markdownPurifier.sanitize(markdownParser.render(text), MARKDOWN_CONFIG));
  reference.childNodes.forEach(codeBlocksDress);
  return { live: live.innerHTML, atOnce: atOnce.innerHTML, reference: reference.innerHTML, found };
}"""
ALLOWED_IN_A_REPLY = [
    *("a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p"),
    *("pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul", "span", "button"),
]
MARKDOWN_PIECES = st.sampled_from(
    [
        *("# ", "## ", "- ", "* ", "1. ", "2) ", "```", "```python\n", "~~~", "`", "**", "*", "_", "~~", "> ", "    "),
        *("|", "| a | b |\n", "|---|--:|\n", ":--", "[link](", "https://example.com", ")", "](", "![", "<", ">"),
        *("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)", "&#x6A;", "&amp;"),
        *("\n", "\n\n", " ", "word", "def f():\n", "[r]: https://example.com\n", "[r]"),
    ]
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.one_of(MARKDOWN_PIECES, st.text(max_size=4)), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_text_drawn_as_it_streams_ends_as_drawn_at_once_and_never_runnable(renderer, pieces, cuts):
    text = "".join(pieces)
    cuts = sorted(cut for cut in cuts if cut < len(text))
    drawn = renderer.evaluate(DRAW_LIVE_AND_AT_ONCE, [text, cuts, ALLOWED_IN_A_REPLY])

    assert drawn["found"] == []
    assert drawn["live"] == drawn["atOnce"] == drawn["reference"]


def open_chat(page: Page, user) -> int:
    """A chat of the user's with one exchange in it, opened: its composer sends with the reply in the answer."""
    chat = make_conversation(user, title="Open chat")
    make_message(chat, "user", "Earlier")
    make_message(chat, "assistant", "Earlier answer")
    log_in(page, user)
    page.goto(f"/c/{chat.pk}/")
    return chat.pk


def test_a_message_in_an_open_chat_gets_its_reply_in_its_own_answer(page, alice, catalog, upstream):
    words = [f"word{i} " for i in range(30)]
    upstream.script(Reply(chunks=words, first_delay=0.2, delay=0.04))
    requests = []
    page.on("request", lambda request: requests.append((request.method, request.url)))
    chat = open_chat(page, alice)

    send(page, "Count to thirty")

    samples = chat_page.live_samples(page)
    reply = last_reply(page)
    expect(reply.locator(".usage")).to_be_visible()  # the finished reply
    expect(reply.locator(".content.markdown")).to_have_text("".join(words).strip())
    assert len(set(samples)) > 3  # seen growing as it was written
    expect(page.get_by_role("textbox", name="Message")).to_have_value("")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    # One request for the message and its reply: none of the reply's own stream.
    assert [method for method, url in requests if url.endswith(f"/c/{chat}/messages/")] == ["POST"]
    assert not [url for _, url in requests if "/stream/" in url]


def test_a_reply_whose_answer_was_cut_carries_on_from_its_own_stream(page, alice, catalog, upstream):
    words = [f"part{i} " for i in range(20)]
    upstream.script(Reply(chunks=words, first_delay=0.1, delay=0.02))
    streams = []
    page.on("request", lambda request: streams.append(request.url) if "/stream/" in request.url else None)

    def cut_after_the_first_words(route):
        answer = route.fetch()  # whole: the reply has ended
        body = answer.body()
        route.fulfill(response=answer, body=body[: body.index(b"\n\n", body.index(b"event: delta")) + 2])

    chat = open_chat(page, alice)
    page.route(f"**/c/{chat}/messages/", cut_after_the_first_words)

    send(page, "Go")

    reply = last_reply(page)
    expect(reply.locator(".usage")).to_be_visible()
    expect(reply.locator(".content.markdown")).to_have_text("".join(words).strip())
    expect(page.locator("#toast")).to_be_hidden()
    reply_id = reply.get_attribute("id").removeprefix("message-")
    assert streams == [f"{page.url.split('/c/')[0]}/c/{chat}/messages/{reply_id}/stream/?offset={len(words[0])}"]


def test_a_new_chats_first_message_gets_its_reply_in_its_own_answer_at_the_chats_address(
    page, alice, catalog, upstream
):
    upstream.script(Reply(chunks=[f"hi{i} " for i in range(10)], first_delay=0.1, delay=0.03))
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    log_in(page, alice)
    home = page.url

    send(page, "Hello")

    reply = last_reply(page)
    expect(reply.locator(".usage")).to_be_visible()
    expect(reply.locator(".content.markdown")).to_have_text("".join(f"hi{i} " for i in range(10)).strip())
    chat = Conversation.objects.get(user=alice)
    assert page.url.endswith(f"/c/{chat.pk}/")
    expect(page.locator(f"#chat-item-{chat.pk} a")).to_have_attribute("aria-current", "page")
    assert not [url for url in requests if "/stream/" in url]
    # The chat's own composer now sends to it, the same way.
    send(page, "Again")
    expect(page.locator("article.assistant .usage")).to_have_count(2)
    assert not [url for url in requests if "/stream/" in url]
    page.go_back()
    expect(page).to_have_url(home)
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()


def test_enter_pressed_twice_sends_the_message_once(page, alice, catalog, upstream):
    upstream.script(Reply(chunks=["Once ", "only."], first_delay=0.2))
    posts = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    chat = open_chat(page, alice)
    composer = page.get_by_role("textbox", name="Message")
    composer.fill("Just once")

    composer.press("Enter")
    composer.press("Enter")

    expect(last_reply(page).locator(".usage")).to_be_visible()
    expect(last_reply(page).locator(".content.markdown")).to_have_text("Once only.")
    expect(page.locator("article.user", has_text="Just once")).to_have_count(1)
    expect(page.locator("#composer-errors")).to_be_empty()
    assert len([url for url in posts if url.endswith(f"/c/{chat}/messages/")]) == 1


def test_a_browser_that_cannot_read_an_answer_as_it_comes_sends_through_htmx_and_watches_the_reply(
    page, alice, catalog, upstream
):
    upstream.script(Reply(chunks=["Still ", "here."], first_delay=0.2))
    page.add_init_script("delete window.TextDecoderStream")
    streams = []
    page.on("request", lambda request: streams.append(request.url) if "/stream/" in request.url else None)
    open_chat(page, alice)

    send(page, "Old browser")

    reply = last_reply(page)
    expect(reply.locator(".usage")).to_be_visible()
    expect(reply.locator(".content.markdown")).to_have_text("Still here.")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("")
    reply_id = reply.get_attribute("id").removeprefix("message-")
    assert [url.split("?")[0].endswith(f"/messages/{reply_id}/stream/") for url in streams] == [True]
