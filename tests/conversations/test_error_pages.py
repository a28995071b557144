"""The 500 page and the favicon: what a user sees when something breaks, and in the tab."""

import pytest
from django.contrib.staticfiles import finders
from django.test import RequestFactory
from django.views.defaults import server_error

from tests.dom import parse_html

pytestmark = pytest.mark.django_db


def test_a_server_error_shows_the_sites_styled_page_saying_nothing_was_lost():
    response = server_error(RequestFactory().get("/c/1/"))

    assert response.status_code == 500
    page = parse_html(response.content)
    assert page.find("h1").text == "Something broke on our side"
    assert "Your chats and messages are safe." in page.text
    assert page.find("a", text="Back to your chats").attrs["href"] == "/"
    assert any("chat.css" in link.attrs.get("href", "") for link in page.find_all("link"))


def test_every_page_names_an_svg_favicon_that_exists(client):
    page = parse_html(client.get("/accounts/login/").content)

    icon = page.find("link", rel="icon")
    assert icon.attrs["type"] == "image/svg+xml"
    path = finders.find(icon.attrs["href"].removeprefix("/static/"))
    assert path is not None
    assert open(path, encoding="utf-8").read().lstrip().startswith("<svg")
