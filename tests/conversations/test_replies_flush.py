"""Saving the text of the replies being written (conversations/services/replies.py, replies_flush): one statement
for all of them, on PostgreSQL and on SQLite (the embedded default), leaving alone replies that ended meanwhile."""

import json
from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import Message
from conversations.services.replies import replies_flush
from tests.accounts.test_ledger_on_sqlite import manage_ok
from tests.conftest import make_conversation, make_message


def test_the_texts_of_live_replies_are_saved_in_one_statement_and_ended_ones_left_alone(alice, catalog):
    chat = make_conversation(alice)
    long_ago = timezone.now() - timedelta(minutes=5)
    pending = make_message(chat, "assistant", status=Message.Status.PENDING, updated_at=long_ago)
    streaming = make_message(chat, "assistant", "Hal", status=Message.Status.STREAMING, updated_at=long_ago)
    stopped = make_message(chat, "assistant", "Stopped here", status=Message.Status.STOPPED)
    deleted_id = streaming.pk + 1000

    with CaptureQueriesContext(connection) as queries:
        gone = replies_flush(
            texts={pending.pk: "Über 日本", streaming.pk: "Half a 'sentence' 🙂", stopped.pk: "more", deleted_id: "x"}
        )

    assert len(queries) == 1
    assert gone == {stopped.pk, deleted_id}
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[pending.pk, streaming.pk, stopped.pk])}
    assert (rows[pending.pk].content, rows[pending.pk].status) == ("Über 日本", Message.Status.STREAMING)
    assert (rows[streaming.pk].content, rows[streaming.pk].status) == ("Half a 'sentence' 🙂", "streaming")
    assert rows[pending.pk].updated_at > long_ago and rows[streaming.pk].updated_at > long_ago  # the heartbeat
    assert (rows[stopped.pk].content, rows[stopped.pk].status) == ("Stopped here", Message.Status.STOPPED)


SCRIPT = """
import json
from conversations.models import ChatModel, Conversation, Message
from conversations.services.replies import replies_flush
from accounts.models import User

user = User.objects.create(username="ada")
chat = Conversation.objects.create(user=user, model=ChatModel.objects.default())
def reply(status):
    return Message.objects.create(conversation=chat, user=user, role="assistant", status=status).pk
live, stopped = reply("streaming"), reply("stopped")
gone = replies_flush(texts={live: "Über 日本 🙂", stopped: "more"})
print(json.dumps({
    "gone": sorted(gone) == [stopped],
    "texts": dict(Message.objects.filter(pk__in=[live, stopped]).values_list("status", "content")),
}))
"""


def test_the_texts_are_saved_on_sqlite_too(tmp_path):
    manage_ok(tmp_path, "migrate", "--verbosity", "0")
    manage_ok(tmp_path, "seedcatalog")

    saved = json.loads(manage_ok(tmp_path, "shell", "--no-imports", "--command", SCRIPT).splitlines()[-1])

    assert saved == {"gone": True, "texts": {"streaming": "Über 日本 🙂", "stopped": ""}}
