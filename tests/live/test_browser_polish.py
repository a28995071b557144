"""Finding and keeping chats, and the screens around them, in real Chromium at 1366 px and 390 px."""

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from conversations.models import Conversation, Message
from tests.conftest import PASSWORD, make_conversation, make_message
from tests.fake_upstream import Reply
from tests.live import test_browser_chat as chat_page
from tests.live.test_browser_chat import last_reply, log_in, send
from tests.servers import site_server

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The chat page tests' Chromium and its contexts (which fail a test on any JavaScript error).
browser = chat_page.browser
new_context = chat_page.new_context

VIEWPORTS = {
    "desktop": {"viewport": {"width": 1366, "height": 768}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


@pytest.fixture(params=VIEWPORTS, ids=VIEWPORTS)
def screen(request, new_context) -> Page:
    return new_context(**VIEWPORTS[request.param]).new_page()


def chat_list(page: Page):
    """The chat list, unfolded first on a phone (where it starts folded away)."""
    sidebar = page.locator("#sidebar")
    if sidebar.get_attribute("open") is None:
        sidebar.locator("summary").first.click()
    return page.get_by_role("navigation", name="Chats")


def test_search_finds_a_word_that_is_only_inside_a_message(screen, alice, bob, catalog):
    garden = make_conversation(alice, title="Garden")
    make_message(garden, "user", "What should I plant?")
    make_message(garden, "assistant", "Tomatoes. " * 20 + "Rottnest has quokkas. " + "Beans. " * 20)
    make_conversation(alice, title="Taxes")
    bobs = make_conversation(bob, title="Bob's notes")
    make_message(bobs, "user", "Rottnest again")
    log_in(screen, alice)
    chats = chat_list(screen)
    expect(chats.get_by_role("link")).to_have_text(["Taxes", "Garden"])

    screen.get_by_role("searchbox", name="Search chats").fill("rottn")

    expect(chats.get_by_role("link")).to_have_text(["Garden"])
    expect(chats.locator("mark")).to_have_text("Rottnest")
    expect(chats).to_contain_text("Rottnest has quokkas.")
    chats.get_by_role("link", name="Garden").click()
    expect(screen.locator("article.assistant")).to_contain_text("Rottnest has quokkas.")


def test_chats_are_grouped_by_day_of_last_activity(screen, alice, catalog):
    now = timezone.now()
    for title, age in [("Now", 0), ("Before", 1), ("Last week", 4), ("Last month", 20), ("Long ago", 200)]:
        make_conversation(alice, title=title, updated_at=now - timedelta(days=age))
    long_ago = timezone.localdate(now - timedelta(days=200)).strftime("%B %Y")
    log_in(screen, alice)

    chats = chat_list(screen)

    expect(chats.get_by_role("heading")).to_have_text(
        ["Today", "Yesterday", "Previous 7 days", "Previous 30 days", long_ago]
    )
    expect(chats.get_by_role("link")).to_have_text(["Now", "Before", "Last week", "Last month", "Long ago"])


def test_a_message_moves_its_chat_to_the_top_of_today(screen, alice, catalog, upstream):
    now = timezone.now()
    make_conversation(alice, title="Now", updated_at=now)
    old = make_conversation(alice, title="Before", updated_at=now - timedelta(days=1))
    make_conversation(alice, title="Last week", updated_at=now - timedelta(days=4))
    upstream.script(Reply("Noted."))
    log_in(screen, alice)
    screen.goto(f"/c/{old.pk}/")

    send(screen, "One more thing")

    expect(last_reply(screen)).to_contain_text("Noted.")
    chats = chat_list(screen)
    expect(chats.get_by_role("heading")).to_have_text(["Today", "Previous 7 days"])  # yesterday's group emptied
    expect(chats.get_by_role("link")).to_have_text(["Before", "Now", "Last week"])
    expect(chats.get_by_role("link", name="Before")).to_have_attribute("aria-current", "page")
    assert chats.inner_html().count("chat-item-") == 3
    # The moved chat's menu works as it did where it was.
    item = chats.locator(f"#chat-item-{old.pk}")
    item.get_by_label("Options for Before").click()
    item.get_by_role("button", name="Rename").click()
    item.get_by_role("textbox", name="New name for the chat").fill("Before, renamed")
    item.get_by_role("textbox", name="New name for the chat").press("Enter")
    expect(chats.get_by_role("link")).to_have_text(["Before, renamed", "Now", "Last week"])
    # A reload shows the list the page showed: the server's.
    screen.reload()
    expect(chat_list(screen).get_by_role("heading")).to_have_text(["Today", "Previous 7 days"])
    expect(chat_list(screen).get_by_role("link")).to_have_text(["Before, renamed", "Now", "Last week"])


def test_a_chat_is_renamed_in_place_from_the_chat_list(screen, alice, catalog, live_site):
    trip = make_conversation(alice, title="Trip plans")
    make_conversation(alice, title="Other chat", updated_at=timezone.now() - timedelta(minutes=1))
    log_in(screen, alice)
    screen.goto(f"/c/{trip.pk}/")
    item = chat_list(screen).locator(f"#chat-item-{trip.pk}")

    item.get_by_label("Options for Trip plans").click()
    item.get_by_role("button", name="Rename").click()
    box = item.get_by_role("textbox", name="New name for the chat")
    expect(box).to_be_focused()
    expect(box).to_have_value("Trip plans")
    box.fill("Lisbon in May")
    box.press("Enter")

    expect(chat_list(screen).get_by_role("link")).to_have_text(["Lisbon in May", "Other chat"])
    expect(screen.get_by_role("textbox", name="Chat name")).to_have_value("Lisbon in May")  # the open chat's header
    expect(screen).to_have_title("Lisbon in May · Chat")
    expect(screen).to_have_url(f"{live_site}/c/{trip.pk}/")
    trip.refresh_from_db()
    assert trip.title == "Lisbon in May"


def test_escape_gives_up_a_rename_in_the_list(screen, alice, catalog):
    trip = make_conversation(alice, title="Trip plans")
    log_in(screen, alice)
    item = chat_list(screen).locator(f"#chat-item-{trip.pk}")
    item.get_by_label("Options for Trip plans").click()
    item.get_by_role("button", name="Rename").click()
    box = item.get_by_role("textbox", name="New name for the chat")

    box.fill("Never mind")
    box.press("Escape")

    expect(box).to_have_count(0)
    expect(item.get_by_role("link")).to_have_text("Trip plans")
    trip.refresh_from_db()
    assert trip.title == "Trip plans"


def test_the_menu_exports_a_chat_as_a_download(screen, alice, catalog):
    trip = make_conversation(alice, title="Trip plans")
    make_message(trip, "user", "Where in May?")
    make_message(trip, "assistant", "Lisbon.", model=trip.model, prompt_tokens=12, completion_tokens=3)
    log_in(screen, alice)
    screen.goto(f"/c/{trip.pk}/")
    header = screen.locator("header.chat-header")

    header.get_by_label("Options for Trip plans").click()
    with screen.expect_download() as markdown:
        header.get_by_role("button", name="Export as Markdown").click()
    header.get_by_label("Options for Trip plans").click()
    with screen.expect_download() as as_json:
        header.get_by_role("button", name="Export as JSON").click()

    assert markdown.value.suggested_filename == f"trip-plans-{trip.pk}.md"
    text = open(markdown.value.path(), encoding="utf-8").read()
    assert text.startswith("# Trip plans\n") and "Where in May?" in text and "Lisbon." in text
    assert "*12 in / 3 out" in text
    data = json.loads(open(as_json.value.path(), encoding="utf-8").read())
    assert [message["content"] for message in data["messages"]] == ["Where in May?", "Lisbon."]
    expect(screen).to_have_url(re.compile(rf"/c/{trip.pk}/$"))  # the page stays
    expect(header.get_by_role("button", name="Export as JSON")).to_be_hidden()  # and the menu is put away


def test_a_chat_deleted_from_the_list_goes_and_the_open_chat_stays(screen, alice, catalog, live_site):
    trip = make_conversation(alice, title="Trip plans")
    old = make_conversation(alice, title="Old chat", updated_at=timezone.now() - timedelta(minutes=5))
    log_in(screen, alice)
    screen.goto(f"/c/{trip.pk}/")
    item = chat_list(screen).locator(f"#chat-item-{old.pk}")
    screen.once("dialog", lambda dialog: dialog.accept())

    item.get_by_label("Options for Old chat").click()
    item.get_by_role("button", name="Delete").click()

    expect(chat_list(screen).get_by_role("link")).to_have_text(["Trip plans"])
    expect(screen).to_have_url(f"{live_site}/c/{trip.pk}/")
    assert list(Conversation.objects.values_list("title", flat=True)) == ["Trip plans"]


def test_a_deleted_chats_address_shows_the_styled_not_found_page(screen, alice, catalog):
    gone = make_conversation(alice, title="Gone soon")
    log_in(screen, alice)
    Conversation.objects.filter(pk=gone.pk).delete()

    response = screen.goto(f"/c/{gone.pk}/")

    assert response.status == 404
    expect(screen).to_have_title("Not found · Chat")
    expect(screen.get_by_role("heading", name="Nothing here")).to_be_visible()
    expect(screen.get_by_text("it may have been deleted")).to_be_visible()
    link = screen.get_by_role("link", name="Back to your chats")
    assert link.evaluate("a => getComputedStyle(a).borderStyle") == "solid"  # the site's stylesheet applies
    link.click()
    expect(screen.get_by_role("textbox", name="Message")).to_be_visible()


def test_the_phone_header_is_one_row_with_the_name_cut_short(new_context, alice, catalog):
    page = new_context(**VIEWPORTS["phone"]).new_page()
    long_name = "A very long chat name about planning three weeks of trains across Portugal and Spain"
    chat = make_conversation(alice, title=long_name)
    log_in(page, alice)

    page.goto(f"/c/{chat.pk}/")

    header = page.locator("header.chat-header")
    name = header.get_by_role("textbox", name="Chat name")
    menu = header.get_by_label(f"Options for {long_name}")
    expect(name).to_have_value(long_name)
    name_box, menu_box, header_box = name.bounding_box(), menu.bounding_box(), header.bounding_box()
    assert header_box["height"] < 56, f"the header is {header_box['height']} px tall"
    assert abs((name_box["y"] + name_box["height"] / 2) - (menu_box["y"] + menu_box["height"] / 2)) < 4
    assert menu_box["x"] + menu_box["width"] <= 390
    assert name.evaluate("box => box.scrollWidth > box.clientWidth")  # longer than the room it has...
    assert name.evaluate("box => getComputedStyle(box).textOverflow") == "ellipsis"  # ...so it ends in "…"


def test_the_tab_title_follows_the_chat(new_context, alice, catalog, upstream, live_site):
    page = new_context(**VIEWPORTS["desktop"]).new_page()
    upstream.script(Reply("Light."))
    log_in(page, alice)
    expect(page).to_have_title("Chat")

    send(page, "Basil in winter")

    expect(last_reply(page).locator(".markdown")).to_have_text("Light.")
    expect(page).to_have_title("Basil in winter · Chat")
    name = page.get_by_role("textbox", name="Chat name")
    name.fill("My basil")
    page.get_by_role("button", name="Rename").click()
    expect(page).to_have_title("My basil · Chat")
    page.get_by_role("link", name="New chat").click()
    expect(page).to_have_title("Chat")


def test_an_example_prompt_fills_the_message_box(screen, alice, catalog):
    log_in(screen, alice)
    empty = screen.locator("#messages .empty-state")
    expect(empty).to_contain_text("You are talking to GPT-4o mini")

    empty.get_by_role("button", name=re.compile("^Plan three days in Lisbon")).click()

    composer = screen.get_by_role("textbox", name="Message")
    expect(composer).to_have_value("Plan three days in Lisbon on a small budget.")
    expect(composer).to_be_focused()


def test_staff_get_a_link_to_the_admin_and_others_do_not(new_context, alice, root, catalog):
    staff, user = new_context().new_page(), new_context().new_page()
    log_in(staff, root)
    log_in(user, alice)

    expect(user.get_by_role("link", name="Admin")).to_have_count(0)
    staff.get_by_role("link", name="Admin").click()
    expect(staff).to_have_url(re.compile("/admin/$"))


def test_the_admin_message_list_fits_1366_px_with_tokens_and_cost(new_context, root, alice, catalog):
    chat = make_conversation(alice, title="A chat with a rather long name about many different things at once")
    for n in range(3):
        make_message(chat, "user", f"Question {n}")
        make_message(
            chat, "assistant", "Answer", model=chat.model, prompt_tokens=123456, completion_tokens=65432, cost=1
        )
    page = new_context(**VIEWPORTS["desktop"]).new_page()
    log_in(page, root)

    page.goto("/admin/conversations/message/")

    for column in ["Prompt tokens", "Completion tokens", "Cached tokens", "Cost"]:
        expect(page.locator("#result_list thead th", has_text=column)).to_be_in_viewport(ratio=1)
    expect(page.locator("#result_list tbody tr").first.locator("td.field-cost")).to_be_in_viewport(ratio=1)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 1366
    assert page.locator("#changelist .results").evaluate("r => r.scrollWidth <= r.clientWidth")


@pytest.fixture(scope="module")
def titled_site(live_env):
    """A second server with titles on (the tests' default is off)."""
    with site_server({**live_env, "CHAT_TITLES": "true"}) as base_url:
        yield base_url


def test_a_generated_title_reaches_the_open_page(new_context, alice, catalog, upstream, titled_site):
    upstream.script(Reply("Give it light."), Reply("Basil in winter", first_delay=0.3))
    page = new_context(**VIEWPORTS["desktop"]).new_page()
    page.goto(f"{titled_site}/accounts/login/")
    page.get_by_label("Username").fill(alice.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    send(page, "How do I keep basil alive in winter?")

    expect(last_reply(page).locator(".markdown")).to_have_text("Give it light.")
    chats = page.get_by_role("navigation", name="Chats")
    expect(chats.get_by_role("link")).to_have_text(["Basil in winter"])
    expect(page.get_by_role("textbox", name="Chat name")).to_have_value("Basil in winter")
    expect(page).to_have_title("Basil in winter · Chat")
    assert Conversation.objects.get().title == "Basil in winter"
    assert Message.objects.filter(role="assistant").count() == 1
