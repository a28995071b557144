"""Reading a chat's branches: the messages on screen, and the versions of each.

A chat is a tree: each message follows its `parent`, and the versions of a
message (an edit, a regenerated reply) are its siblings, with the same parent
and role. The chat's `leaf` ends the branch on screen; the branch is the path
from the first message down to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection

from accounts.rows import rows_queued
from conversations.models import Conversation, Message, MessageImage


@dataclass(frozen=True)
class Versions:
    """Where a message stands among its versions, for the "2 / 3" controls."""

    number: int = 1
    count: int = 1
    previous_id: int | None = None
    next_id: int | None = None
    # Whether nothing follows it: only the end of a branch can be continued.
    ends_branch: bool = True


class _Tree:
    """The shape of one chat (ids, parents and roles, no text), to walk it without a query per step."""

    def __init__(self, conversation: Conversation):
        rows = Message.objects.filter(conversation=conversation).values_list("pk", "parent_id", "role")
        self.parent: dict[int, int | None] = {}
        self.role: dict[int, str] = {}
        self.children: dict[int | None, list[int]] = {}
        newest = None
        for pk, parent_id, role in rows.order_by("created_at", "id"):
            self.parent[pk], self.role[pk] = parent_id, role
            self.children.setdefault(parent_id, []).append(pk)
            newest = pk
        # No leaf stored (rows written outside the services): the newest message ends the branch.
        self.leaf_id = conversation.leaf_id if conversation.leaf_id in self.parent else newest

    def path(self) -> list[int]:
        """The ids of the branch on screen, first message first."""
        path, pk = [], self.leaf_id
        while pk is not None:
            path.append(pk)
            pk = self.parent[pk]
        return path[::-1]

    def newest_leaf_below(self, pk: int) -> int:
        """The end of the branch through `pk` that follows its newest versions."""
        while self.children.get(pk):
            pk = self.children[pk][-1]
        return pk

    def versions(self, pk: int) -> Versions:
        siblings = [other for other in self.children[self.parent[pk]] if self.role[other] == self.role[pk]]
        at = siblings.index(pk)
        return Versions(
            number=at + 1,
            count=len(siblings),
            previous_id=siblings[at - 1] if at > 0 else None,
            next_id=siblings[at + 1] if at + 1 < len(siblings) else None,
            ends_branch=not self.children.get(pk),
        )


def branch_messages(conversation: Conversation) -> list[Message]:
    """The messages of the branch on screen, in order, each with its `versions`."""
    tree = _Tree(conversation)
    path = tree.path()
    by_pk = Message.objects.select_related("model").prefetch_related("images").in_bulk(path)
    messages = [by_pk[pk] for pk in path]
    for message in messages:
        message.versions = tree.versions(message.pk)
    return messages


def message_with_versions(message: Message) -> Message:
    """One message with its `versions`, to render it alone (a finished reply replacing its live one)."""
    message.versions = _Tree(message.conversation).versions(message.pk)
    return message


def branch_end(conversation: Conversation) -> int | None:
    """The id of the message that ends the branch on screen (a new message follows it); None in an empty chat."""
    if conversation.leaf_id is not None:
        return conversation.leaf_id
    return Message.objects.filter(conversation=conversation).values_list("pk", flat=True).last()


def leaf_through(message: Message) -> int:
    """The leaf to store when the user picks `message` (one of its versions): its branch, newest versions below."""
    return _Tree(message.conversation).newest_leaf_below(message.pk)


@dataclass(frozen=True)
class Turn:
    """A message of a branch as the model reads it."""

    pk: int
    role: str
    content: str
    has_images: bool


def branch_through(pk: int) -> list[Turn]:
    """Message `pk` and those before it on its branch, first first (what the model reads), in one statement."""
    return branch_through_queued(pk)()


def branch_through_queued(pk: int) -> Callable[[], list[Turn]]:
    """branch_through, answered when called for (inside one_round_trip, with the block's other statements).

    It walks up the message's parents alone, however many other versions and
    branches the chat has: each step looks up one parent by its key. Written as
    a join instead, each step was planned for ten rows and scanned the whole
    message table once a step while the table was small (16 ms for a branch of
    46 among 882 messages).
    """
    messages, images = Message._meta, MessageImage._meta
    quote = connection.ops.quote_name
    parent, role, content = (quote(messages.get_field(name).column) for name in ("parent", "role", "content"))
    key, image_message = quote(messages.pk.column), quote(images.get_field("message").column)
    statement = f"""
        WITH RECURSIVE path (id, depth) AS (
            SELECT CAST(%s AS bigint), 0
            UNION ALL
            SELECT (SELECT m.{parent} FROM {messages.db_table} m WHERE m.{key} = path.id), path.depth + 1
            FROM path WHERE path.id IS NOT NULL
        )
        SELECT m.{key}, m.{role}, m.{content},
            EXISTS (SELECT 1 FROM {images.db_table} i WHERE i.{image_message} = m.{key})
        FROM path JOIN {messages.db_table} m ON m.{key} = path.id
        ORDER BY path.depth DESC
    """
    rows = rows_queued(statement, [pk])
    return lambda: [Turn(*row[:3], has_images=bool(row[3])) for row in rows()]
