"""Images in real Chromium, on a wide screen and a phone: attach, preview, remove, send, see them in the chat.

The site runs under daphne against the fake upstream; what the model was sent
is read from the fake's request log.
"""

import pytest
from playwright.sync_api import Locator, Page, expect

from conversations.models import ChatModel
from tests.fake_upstream import Reply
from tests.images import png_image
from tests.live.test_browser_chat import browser, last_reply, log_in, new_context, send  # noqa: F401 (fixtures)
from tests.live.test_csp import RECORD_VIOLATIONS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {
    "1366px": {"viewport": {"width": 1366, "height": 800}},
    "390px": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
SQUARE = png_image(48, 32, (30, 120, 220))
OTHER = png_image(8, 8)


@pytest.fixture(params=VIEWPORTS, ids=VIEWPORTS)
def page(request, new_context) -> Page:  # noqa: F811 (a page at each screen width)
    return new_context(**VIEWPORTS[request.param]).new_page()


def file(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "image/png", "buffer": data}


def drawn_width(image: Locator) -> int:
    """The width of the picture the browser decoded (0: it could not show it)."""
    expect(image).to_be_visible()
    image.evaluate("img => img.decode()")
    return image.evaluate("img => img.naturalWidth")


def test_an_attached_image_is_previewed_sent_and_shown_in_the_chat_after_a_reload(page, alice, catalog, upstream):
    upstream.script(Reply(chunks=["A blue ", "rectangle, ", "wider than tall."], first_delay=0.3, delay=0.2))
    page.add_init_script(RECORD_VIOLATIONS)  # previews are data: URLs, thumbnails our own: the policy allows both
    log_in(page, alice)
    attach = page.get_by_label("Attach image")
    to_send = page.get_by_role("list", name="Images to send")

    attach.set_input_files([file("square.png", SQUARE), file("other.png", OTHER)])
    expect(to_send.get_by_role("img")).to_have_count(2)
    assert drawn_width(to_send.get_by_role("img", name="square.png")) == 48
    to_send.get_by_role("button", name="Remove other.png").click()
    expect(to_send.get_by_role("img")).to_have_count(1)
    send(page, "What is in this picture?")

    question = page.locator("article.user").last
    thumbnail = question.get_by_role("img", name="square.png")
    assert drawn_width(thumbnail) == 48
    expect(to_send).to_be_hidden()  # sent: nothing is left waiting in the composer
    reply = last_reply(page)
    expect(reply.locator(".content.markdown")).to_contain_text("A blue")  # streaming in
    expect(reply.locator(".usage")).to_be_visible()  # and finished
    expect(reply.locator(".content.markdown")).to_have_text("A blue rectangle, wider than tall.")
    [part_text, part_image] = upstream.requests[0].json["messages"][-1]["content"]
    assert part_text == {"type": "text", "text": "What is in this picture?"}
    assert part_image["image_url"]["url"].startswith("data:image/png;base64,")

    page.reload()

    thumbnail = page.locator("article.user").last.get_by_role("img", name="square.png")
    assert drawn_width(thumbnail) == 48
    with page.context.expect_page() as opened:
        thumbnail.click()
    full = opened.value
    full.wait_for_load_state()
    assert full.url == thumbnail.evaluate("img => img.src")
    assert full.locator("img").evaluate("img => img.naturalWidth") == 48
    assert page.evaluate("window.cspViolations") == []


def test_attach_is_offered_only_while_the_model_picked_takes_images(page, alice, catalog, upstream):
    ChatModel.objects.filter(model_id="gpt-4o").update(accepts_images=False)
    log_in(page, alice)
    attach = page.get_by_label("Attach image")
    picker = page.get_by_label("Model")
    expect(picker).to_have_value("gpt-4o-mini")
    expect(attach).to_be_attached()
    expect(page.locator("label.attach")).to_be_visible()

    attach.set_input_files([file("square.png", SQUARE)])
    picker.select_option("gpt-4o")

    expect(page.locator("label.attach")).to_be_hidden()
    expect(page.get_by_role("list", name="Images to send")).to_be_hidden()  # what was attached is dropped
    send(page, "Hello")
    expect(last_reply(page).locator(".usage")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Model")).to_have_value("gpt-4o")
    expect(page.locator("label.attach")).to_be_hidden()
    assert upstream.requests[0].json["messages"][-1]["content"] == "Hello"


# An image as the clipboard or a drag from another window hands it over.
IMAGE_TRANSFER = """([bytes, name]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([new Uint8Array(bytes)], name, { type: "image/png" }));
  return transfer;
}"""


def test_pasted_and_dropped_images_are_attached(page, alice, catalog, upstream):
    log_in(page, alice)
    to_send = page.get_by_role("list", name="Images to send")
    box = page.get_by_role("textbox", name="Message")

    pasted = page.evaluate_handle(IMAGE_TRANSFER, [list(SQUARE), "pasted.png"])
    box.evaluate(
        "(box, data) => box.dispatchEvent(new ClipboardEvent('paste', { clipboardData: data, bubbles: true }))", pasted
    )
    dropped = page.evaluate_handle(IMAGE_TRANSFER, [list(OTHER), "dropped.png"])
    box.dispatch_event("drop", {"dataTransfer": dropped})

    expect(to_send.get_by_role("img")).to_have_count(2)
    assert drawn_width(to_send.get_by_role("img", name="pasted.png")) == 48
    assert drawn_width(to_send.get_by_role("img", name="dropped.png")) == 8
    send(page, "Two pictures")
    expect(page.locator("article.user").last.get_by_role("img")).to_have_count(2)
    expect(last_reply(page).locator(".usage")).to_be_visible()
    sent = upstream.requests[0].json["messages"][-1]["content"]
    assert [part["type"] for part in sent] == ["text", "image_url", "image_url"]
