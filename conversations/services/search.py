"""Finding a user's own chats by words in their names or messages.

PostgreSQL matches with its full text search (every word, as a prefix, in a
name or in one message; a GIN index keeps it quick); SQLite, the embedded
default, scans for the words instead. The snippet shown under a result is cut
and highlighted here, as plain text pieces the template escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connection
from django.db.models import Q, QuerySet

from conversations.models import SEARCH_CONFIG, Conversation, Message

if TYPE_CHECKING:
    from accounts.models import User

SEARCH_RESULTS = 30
# Messages read to find the chats they belong to: enough for SEARCH_RESULTS chats in practice.
MESSAGES_READ = 150
MAX_WORDS = 8
SNIPPET_BEFORE, SNIPPET_AFTER = 40, 100


@dataclass
class SearchHit:
    """A chat found, and where: pieces of one of its messages, True for the words searched."""

    conversation: Conversation
    snippet: list[tuple[str, bool]] = field(default_factory=list)


def search_words(query: str) -> list[str]:
    """The words of a query, letters and digits only: nothing else reaches the database's query syntax."""
    return re.findall(r"[^\W_]+", query)[:MAX_WORDS]


def _matching(rows: QuerySet, field_name: str, words: list[str], *, full_text: bool) -> QuerySet:
    if full_text:
        query = SearchQuery(" & ".join(f"{word}:*" for word in words), search_type="raw", config=SEARCH_CONFIG)
        return rows.annotate(found=SearchVector(field_name, config=SEARCH_CONFIG)).filter(found=query)
    every_word = Q()
    for word in words:
        every_word &= Q(**{f"{field_name}__icontains": word})
    return rows.filter(every_word)


def chat_search(*, user: User, query: str, full_text: bool | None = None) -> list[SearchHit]:
    """The user's chats whose name, or one of whose messages, has every word of `query`; latest activity first.

    full_text: PostgreSQL's full text search, or a scan; by default whichever the database offers.
    """
    words = search_words(query)
    if not words:
        return []
    if full_text is None:
        full_text = connection.vendor == "postgresql"
    by_name = _matching(Conversation.objects.for_user(user), "title", words, full_text=full_text)
    named = set(by_name.values_list("pk", flat=True)[:SEARCH_RESULTS])
    snippets: dict[int, list[tuple[str, bool]]] = {}
    found = _matching(Message.objects.filter(user=user), "content", words, full_text=full_text)
    for conversation_id, content in found.order_by("-id").values_list("conversation_id", "content")[:MESSAGES_READ]:
        if conversation_id not in snippets:
            snippets[conversation_id] = snippet(content, words)
    chats = Conversation.objects.for_user(user).filter(pk__in=named | snippets.keys()).only("pk", "title", "updated_at")
    return [SearchHit(chat, snippets.get(chat.pk, [])) for chat in chats[:SEARCH_RESULTS]]


def snippet(text: str, words: list[str]) -> list[tuple[str, bool]]:
    """A short stretch of `text` around the first word found, as (piece, is a word searched for) pairs."""
    text = " ".join(text.split())
    # A word found by its start is marked whole, as the database matched it.
    starts = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    pattern = re.compile(rf"(?:{starts})\w*", re.IGNORECASE)
    first = pattern.search(text)
    start = 0 if first is None else max(0, first.start() - SNIPPET_BEFORE)
    end = min(len(text), start + SNIPPET_BEFORE + SNIPPET_AFTER)
    if first is not None:
        end = max(end, first.end())  # a very long word is shown whole
    if start > 0:  # begin at a word
        space = text.find(" ", start, first.start() if first else end)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > (first.end() if first else start) else end
    pieces: list[tuple[str, bool]] = [("…", False)] if start > 0 else []
    position = start
    for match in pattern.finditer(text, start, end):
        if match.start() > position:
            pieces.append((text[position : match.start()], False))
        pieces.append((match.group(), True))
        position = match.end()
    if position < end:
        pieces.append((text[position:end], False))
    if end < len(text):
        pieces.append(("…", False))
    return pieces
