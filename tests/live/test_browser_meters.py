"""Honest models and meters in real Chromium, at 1366 px and 390 px: the picker offers what the upstream lists,
a refusal says the meter's numbers, and costs stay hidden unless the admin shows them."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from accounts.billing.budget import budget_settle
from accounts.models import User
from conversations.models import ChatModel, Message
from tests.fake_upstream import FakeUpstream, Reply
from tests.live.conftest import site_env
from tests.live.test_browser_chat import browser, last_reply, log_in, send  # noqa: F401 (browser: a fixture)
from tests.servers import site_server

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORTS = {
    "1366px": {"viewport": {"width": 1366, "height": 768}},
    "390px": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
REFUSAL = (
    r"(\d+) of your (\d+) tokens for today are left; "
    r"the chat so far may need up to (\d+) of them and a reply up to ([\d,]+)\."
)
# The site reads the upstream's model list this often (seconds), so a test sees it change.
LIST_INTERVAL = 0.2


@pytest.fixture(scope="module")
def own_upstream() -> Iterator[FakeUpstream]:
    """A fake upstream of this module's own: narrowing its list must not narrow the other tests' site."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def meters_site(django_db_setup, own_upstream, tmp_path_factory) -> Iterator[str]:
    env = site_env(
        tmp_path_factory.mktemp("meters-var"),
        OPENAI_BASE_URL=own_upstream.base_url,
        UPSTREAM_MODELS_INTERVAL=str(LIST_INTERVAL),
    )
    with site_server(env) as base_url:
        yield base_url


@pytest.fixture(params=list(VIEWPORTS))
def meters_page(request, browser, meters_site, own_upstream, catalog) -> Iterator[Page]:  # noqa: F811
    own_upstream.reset()
    ChatModel.objects.update(enabled=True)  # every catalog chat model on: the upstream's list decides
    context: BrowserContext = browser.new_context(base_url=meters_site, **VIEWPORTS[request.param])
    context.set_default_timeout(10_000)
    errors: list[str] = []
    context.on("weberror", lambda error: errors.append(str(error.error)))
    yield context.new_page()
    context.close()
    own_upstream.reset()
    assert not errors, f"JavaScript errors on the page: {errors}"


def offered(page: Page) -> list[str]:
    return page.locator("#composer-model option").all_inner_texts()


def reload_until_offered(page: Page, models: list[str]) -> None:
    """Reload until the picker offers `models`: the site reads the list every LIST_INTERVAL seconds."""
    for _ in range(50):
        if offered(page) == models:
            return
        page.wait_for_timeout(100)
        page.reload()
    assert offered(page) == models


def test_the_picker_never_offers_a_model_the_upstream_does_not_list(meters_page, own_upstream, alice):
    page = meters_page
    own_upstream.models = ("gpt-4o-mini", "an-uncatalogued-model")
    log_in(page, alice)
    reload_until_offered(page, ["GPT-4o mini"])

    own_upstream.models = ("gpt-4o",)
    page.wait_for_timeout(LIST_INTERVAL * 3 * 1000)  # the page still offers GPT-4o mini; the site knows better
    send(page, "Who answers?")

    expect(page.locator("#composer-errors")).to_contain_text("That model is not available. Pick one from the list.")
    assert own_upstream.requests == []
    reload_until_offered(page, ["GPT-4o"])

    send(page, "And now?")

    expect(last_reply(page).locator(".markdown")).to_have_text("Hello from the fake upstream.")
    assert [request.json["model"] for request in own_upstream.requests] == ["gpt-4o"]


def test_a_refusal_says_the_numbers_the_meter_shows(meters_page, alice, mini):
    User.objects.filter(pk=alice.pk).update(tokens_per_day=700)
    budget_settle(
        reservation_id=None, user_id=alice.pk, model=mini, kind="reply", prompt_tokens=636, completion_tokens=0
    )
    page = meters_page
    log_in(page, alice)

    send(page, "One more, please")

    alert = last_reply(page).get_by_role("alert")
    expect(alert).to_contain_text("tokens for today are left")
    meter = re.search(r"Tokens today:\s*(\d+) of (\d+)", page.locator("#usage-link").text_content())
    used, limit = int(meter.group(1)), int(meter.group(2))
    said = re.match(REFUSAL, alert.text_content())
    assert said, alert.text_content()
    left, said_limit, prompt_bound = int(said.group(1)), int(said.group(2)), int(said.group(3))
    assert (used, limit, left, said_limit) == (636, 700, limit - used, limit)
    assert prompt_bound + 64 > left  # the smallest reply the site lets go does not fit: the numbers explain it
    assert Message.objects.get(role=Message.Role.ASSISTANT).error_code == "tokens_per_day"


def test_a_reply_shows_its_tokens_and_no_cost_unless_the_admin_turns_costs_on(meters_page, own_upstream, alice):
    own_upstream.script(Reply("Four.", prompt_tokens=25, completion_tokens=2))
    page = meters_page
    log_in(page, alice)

    send(page, "2+2?")

    footer = last_reply(page).locator(".usage")
    expect(footer).to_have_text(re.compile(r"^\s*GPT-4o mini\s+·\s+25 in / 2 out\s*$"))
    assert "$" not in page.locator("#usage-link").text_content()
