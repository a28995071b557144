"""The chat list beside the chat: the user's chats by last activity, grouped under the days people think in."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.utils import timezone
from django.utils.formats import date_format

from conversations.models import Conversation


@dataclass
class ChatGroup:
    label: str
    chats: list[Conversation] = field(default_factory=list)


def day_label(day: date, *, today: date) -> str:
    """Today, Yesterday, Previous 7 days, Previous 30 days, then the month ("October 2026")."""
    if day >= today:  # a clock a little ahead counts as today
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day >= today - timedelta(days=7):
        return "Previous 7 days"
    if day >= today - timedelta(days=30):
        return "Previous 30 days"
    return date_format(day, "F Y")


def chat_groups(chats: Iterable[Conversation], *, today: date) -> list[ChatGroup]:
    """Chats, latest activity first, under their day's label in the site's time zone (as quotas count days)."""
    groups: list[ChatGroup] = []
    for chat in chats:
        label = day_label(timezone.localdate(chat.updated_at), today=today)
        if not groups or groups[-1].label != label:
            groups.append(ChatGroup(label))
        groups[-1].chats.append(chat)
    return groups
