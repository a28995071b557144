"""GET /v1/models: the chat models the caller's key may use; GET /v1/models/{id}: one of those, or of its
embedding models."""

from django.http import JsonResponse

from conversations.db import db_step
from conversations.models import ChatModel
from gateway.auth import api_model, api_models
from gateway.decorators import api_view
from gateway.errors import ApiError


def _model_object(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "chatsite"}


@api_view(methods=("GET",))
async def models_list(request):
    def model_ids() -> list[str]:
        return list(api_models(user=request.api_user, key=request.api_key).values_list("model_id", flat=True))

    return JsonResponse({"object": "list", "data": [_model_object(model_id) for model_id in await db_step(model_ids)]})


@api_view(methods=("GET",))
async def model_retrieve(request, model_id: str):
    model: ChatModel = await db_step(_chat_or_embedding_model, request, model_id)
    return JsonResponse(_model_object(model.model_id))


def _chat_or_embedding_model(request, model_id: str) -> ChatModel:
    """The list stays chat models (what apps offer in a picker); an app that names its embedding model finds it."""
    try:
        return api_model(request, model_id)
    except ApiError:
        return api_model(request, model_id, embedding=True)
