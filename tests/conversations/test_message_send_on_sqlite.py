"""The embedded default (SQLite) stores a message and its reply as PostgreSQL does, where the two rows and the
chat's new leaf are one statement (conversations/services/chats.py): SQLite writes them one after the other."""

import json

from tests.accounts.test_ledger_on_sqlite import manage_ok

SCRIPT = """
import json
from accounts.models import Reservation, User
from conversations.models import ChatModel, Conversation, Message
from conversations.services.chats import message_send

user = User.objects.create(username="ada")
mini = ChatModel.objects.get(model_id="gpt-4o-mini")
first, first_plan = message_send(user=user, conversation=None, text="Hi", model=mini)
second, second_plan = message_send(user=user, conversation=first.conversation, text="And now?", model=mini)
chat = Conversation.objects.get()
stored = {m.pk: m for m in Message.objects.all()}
print(json.dumps({
    "rows": [[m.role, m.content, m.status, m.parent_id] for m in sorted(stored.values(), key=lambda m: m.pk)],
    "ids": [first.parent_id, first.pk, second.parent_id, second.pk],
    "leaf": chat.leaf_id,
    "prompt": [m["content"] for m in second_plan.messages],
    "reserved_for": sorted(Reservation.objects.values_list("message_id", flat=True)),
}))
"""


def test_a_message_and_its_reply_are_stored_in_their_branch_on_sqlite(tmp_path):
    manage_ok(tmp_path, "migrate", "--verbosity", "0")
    manage_ok(tmp_path, "seedcatalog")

    seen = json.loads(manage_ok(tmp_path, "shell", "--no-imports", "--command", SCRIPT).splitlines()[-1])

    question, reply, second_question, second_reply = seen["ids"]
    assert seen["rows"] == [
        ["user", "Hi", "complete", None],
        ["assistant", "", "pending", question],
        ["user", "And now?", "complete", reply],
        ["assistant", "", "pending", second_question],
    ]
    assert seen["leaf"] == second_reply
    assert seen["prompt"] == ["Hi", "And now?"]
    assert seen["reserved_for"] == [reply, second_reply]
