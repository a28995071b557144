"""Which model a /v1 caller may use: the lookup every call makes follows the rule GET /v1/models lists by."""

from types import SimpleNamespace

from asgiref.sync import async_to_sync

from accounts.services import api_key_create
from conversations.models import ChatModel
from conversations.upstream import upstream_offer
from gateway.auth import api_model, api_models, caller_authenticate_with_model
from gateway.errors import ApiError

KINDS = {"chat": {}, "realtime": {"realtime": True}, "embedding": {"embedding": True}}


def model(model_id: str) -> ChatModel:
    return ChatModel.objects.get(model_id=model_id)


def looked_up(user, key, model_id: str, kind: dict) -> ChatModel | None:
    """What a call asking for `model_id` gets: its model, or None for the 404."""
    try:
        return api_model(SimpleNamespace(api_user=user, api_key=key), model_id, **kind)
    except ApiError as refusal:
        assert (refusal.status, refusal.code) == (404, "model_not_found")
        return None


def looked_up_with_key(secret: str, model_id: str, kind: dict) -> ChatModel | None:
    """What a metered call (a chat or embedding model) asking for `model_id` gets: the model is read with the key."""
    request = SimpleNamespace(api_secret=secret, META={"REMOTE_ADDR": "127.0.0.1"})
    _, found = caller_authenticate_with_model(request, model_id, embedding=kind.get("embedding", False))
    return found


def test_every_caller_gets_exactly_the_models_its_list_shows(alice, bob, listing):
    """Each caller (a user's own list or none, a key's list or none) asking for each model of each kind; a
    metered call, which reads its model with its key, gets the same."""
    model_ids = list(ChatModel.objects.values_list("model_id", flat=True))
    listing.models = tuple(m for m in model_ids if m != "smollm2-135m")  # catalogued, not served
    async_to_sync(upstream_offer)()
    ChatModel.objects.filter(model_id="gpt-4o").update(enabled=False)
    alice.allowed_models.set([model("gpt-4o-mini"), model("gpt-4o"), model("gpt-realtime"), model("smollm2-135m")])
    callers = [(alice, None), (bob, None)]
    secrets = {}
    for user, listed in [
        (alice, []),
        (alice, ["gpt-4o-mini", "text-embedding-3-small"]),
        (bob, ["gpt-realtime"]),
        (bob, ["smollm2-135m", "gpt-4o"]),
    ]:
        key, secrets[key] = api_key_create(user=user, name="app", allowed_models=[model(m) for m in listed])
        callers.append((user, key))

    granted = set()
    for index, (user, key) in enumerate(callers):
        for model_id in [*model_ids, "no-such-model"]:
            for kind_name, kind in KINDS.items():
                listed = api_models(user=user, key=key, **kind).filter(model_id=model_id).first()
                assert looked_up(user, key, model_id, kind) == listed, (user, key and key.name, model_id, kind_name)
                if key is not None and kind_name != "realtime":
                    assert looked_up_with_key(secrets[key], model_id, kind) == listed, (index, model_id, kind_name)
                if listed is not None:
                    granted.add((index, model_id, kind_name))

    # What the rule gives, spelled out: the comparison above is not between two empty answers.
    assert (0, "gpt-4o-mini", "chat") in granted  # Alice's own list
    assert (0, "gpt-4o", "chat") not in granted  # disabled
    assert (0, "smollm2-135m", "chat") not in granted  # listed for her, not served
    assert (0, "gpt-4o-mini", "realtime") not in granted  # not a realtime model
    assert (1, "text-embedding-3-small", "embedding") in granted  # Bob has no list: every enabled model
    assert (3, "gpt-4o-mini", "chat") in granted and (3, "gpt-realtime", "realtime") not in granted  # key's list
    assert (3, "text-embedding-3-small", "embedding") not in granted  # the key's list, not Alice's, is wider
    assert (4, "gpt-realtime", "realtime") in granted and (4, "gpt-4o-mini", "chat") not in granted
    assert not any(index == 5 for index, _, _ in granted)  # disabled and unserved: the key can use nothing
