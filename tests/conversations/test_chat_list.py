"""The chat list groups chats by the day of their last activity, in the site's time zone."""

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st

from conversations.services.chat_list import chat_groups, day_label
from tests.conftest import make_conversation
from tests.dom import parse_html

ORDER = ["Today", "Yesterday", "Previous 7 days", "Previous 30 days"]
TODAY = date(2026, 11, 29)


@pytest.mark.parametrize(
    ("days_ago", "label"),
    [
        (0, "Today"),
        (1, "Yesterday"),
        (2, "Previous 7 days"),
        (7, "Previous 7 days"),
        (8, "Previous 30 days"),
        (30, "Previous 30 days"),
        (31, "October 2026"),
        (400, "October 2025"),
        (-1, "Today"),  # a clock a little ahead
    ],
)
def test_each_day_has_its_label(days_ago, label):
    assert day_label(TODAY - timedelta(days=days_ago), today=TODAY) == label


@given(st.lists(st.integers(min_value=-2, max_value=800), max_size=40))
def test_every_chat_is_in_one_group_and_groups_come_newest_first(days_ago):
    class Chat:
        def __init__(self, day: date):
            self.updated_at = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo("UTC"))

    chats = [Chat(TODAY - timedelta(days=n)) for n in sorted(days_ago)]
    groups = chat_groups(chats, today=TODAY)

    assert [chat for group in groups for chat in group.chats] == chats
    labels = [group.label for group in groups]
    assert len(labels) == len(set(labels))  # one heading per label
    named = [label for label in labels if label in ORDER]
    assert named == sorted(named, key=ORDER.index)
    assert labels[: len(named)] == named  # months come after the named periods
    for group in groups:
        assert {day_label(chat.updated_at.date(), today=TODAY) for chat in group.chats} == {group.label}


def test_the_list_shows_the_groups_in_order_with_their_chats(alice_client, alice, settings):
    settings.TIME_ZONE = "America/New_York"
    with time_machine.travel(datetime(2026, 11, 29, 12, 0, tzinfo=ZoneInfo("America/New_York")), tick=False):
        now = datetime.now(ZoneInfo("UTC"))
        for title, age in [
            ("Just now", timedelta(0)),
            ("Last night", timedelta(hours=13)),  # 23:00 yesterday in New York, today in UTC
            ("Monday", timedelta(days=5)),
            ("Early November", timedelta(days=20)),
            ("September", timedelta(days=80)),
        ]:
            make_conversation(alice, title=title, updated_at=now - age)

        page = parse_html(alice_client.get("/").content)

    chat_list = page.find("nav", aria_label="Chats")
    headings_and_lists = [child for child in chat_list.children if not isinstance(child, str)]
    groups = [
        (heading.text, [link.text for link in chats.find_all("a")])
        for heading, chats in zip(headings_and_lists[::2], headings_and_lists[1::2], strict=True)
    ]
    assert groups == [
        ("Today", ["Just now"]),
        ("Yesterday", ["Last night"]),
        ("Previous 7 days", ["Monday"]),
        ("Previous 30 days", ["Early November"]),
        ("September 2026", ["September"]),
    ]
