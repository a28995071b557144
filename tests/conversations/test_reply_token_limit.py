"""The web chat sends the reply's token limit under the name the model's catalog entry gives."""

import pytest

from conversations.models import ChatModel, Message
from tests.conftest import watch_reply

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_reasoning_model_gets_max_completion_tokens(alice_async, upstream):
    await ChatModel.objects.filter(model_id="gpt-4o-mini").aupdate(token_limit_param="max_completion_tokens")

    await alice_async.post("/c/new/messages/", {"text": "Think about it"})
    reply = await Message.objects.filter(role="assistant").alatest("id")
    await watch_reply(alice_async, f"/c/{reply.conversation_id}/messages/{reply.pk}/stream/")

    sent = upstream.requests[0].json
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_completion_tokens"] == (await ChatModel.objects.aget(model_id="gpt-4o-mini")).max_output_tokens
    assert "max_tokens" not in sent
