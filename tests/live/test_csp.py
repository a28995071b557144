"""The Content-Security-Policy in real Chromium: the chat, the account pages and the admin work under it with no
violation, and inline script, handler attributes and eval are refused."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import PASSWORD
from tests.fake_upstream import Reply
from tests.live.test_browser_chat import browser, last_reply, log_in, new_context, send  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every violation the page reports, from its first script on.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def watched(new_context):  # noqa: F811 (the fixture imported above)
    """A page, and the CSP violations it reported: its own events and Chromium's console messages."""
    page = new_context().new_page()
    page.add_init_script(RECORD_VIOLATIONS)
    console = []
    page.on(
        "console",
        lambda message: console.append(message.text) if "Content Security Policy" in message.text else None,
    )

    def violations() -> list[str]:
        return [*page.evaluate("window.cspViolations"), *console]

    return page, violations


def test_the_pages_policy_allows_no_inline_script_and_no_eval(live_site, watched):
    page, _ = watched

    response = page.goto("/accounts/login/")

    policy = dict(
        directive.strip().split(" ", 1) for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"


def test_the_chat_streams_a_reply_under_the_policy_with_no_violation(watched, alice, catalog, upstream):
    page, violations = watched
    table = "\n\n| left | right |\n|:-----|------:|\n| a | 1 |\n"  # Markdown's alignment is a style= attribute
    upstream.script(Reply(chunks=[f"word{i} " for i in range(30)] + [table], first_delay=0.2, delay=0.05))
    log_in(page, alice)

    send(page, "Stream something")

    reply = last_reply(page)
    expect(reply.locator(".content.streaming"), "the reply does not stream in").to_contain_text("word3 ")
    expect(reply.locator(".markdown td").last).to_have_text("1")
    expect(reply.locator(".markdown td").last).to_have_css("text-align", "right")
    page.get_by_role("button", name="Send").wait_for()
    for path in ("/accounts/usage/", "/accounts/keys/"):
        page.goto(path)
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_label("New API key")).to_have_value(re.compile(r"^csk-"))
    expect(page.get_by_role("button", name="Copy")).to_be_visible()  # shown by api_keys.js
    assert violations() == []


def test_the_admin_works_under_the_policy_with_no_violation(watched, root, alice, catalog, upstream):
    page, violations = watched
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Spend and tokens per day, user and model")).to_be_visible()

    page.goto(f"/admin/accounts/user/{alice.pk}/change/")
    page.get_by_label("Tokens per day").fill("1000")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("was changed successfully")).to_be_visible()
    page.goto("/admin/spending/")
    expect(page.get_by_role("heading", name="Spending", exact=True)).to_be_visible()
    assert page.locator(".spending-filters").evaluate("e => getComputedStyle(e).display") == "flex"  # its CSS file

    alice.refresh_from_db()
    assert alice.tokens_per_day == 1000
    assert violations() == []


def inject(page: Page, markup: str) -> None:
    page.evaluate("markup => document.body.insertAdjacentHTML('beforeend', markup)", markup)


def test_inline_script_handlers_and_eval_are_refused(watched, alice, catalog, live_site):
    """What a script injected into a page would try: none of it runs, and each try is reported."""
    page, violations = watched
    log_in(page, alice)

    inject(page, '<img src="/static/none.png" onerror="window.ran = \'handler\'">')
    page.evaluate(
        """() => {
        const script = document.createElement("script");
        script.textContent = "window.ran = 'inline script'";
        document.body.append(script);
        const caller = document.createElement("script");
        caller.src = "data:text/javascript,window.ran='data script'";
        document.body.append(caller);
    }"""
    )
    inject(page, '<button id="htmx-eval" hx-on:click="window.ran = \'htmx eval\'">x</button>')
    page.evaluate("htmx.process(document.getElementById('htmx-eval'))")
    page.locator("#htmx-eval").click()
    page.wait_for_function("window.cspViolations.length >= 3")

    assert page.evaluate("window.ran ?? null") is None
    assert any(v.startswith("script-src-attr") or v.startswith("script-src-elem") for v in violations())
