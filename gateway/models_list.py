"""GET /v1/models: the chat models the caller's key may use."""

from asgiref.sync import sync_to_async
from django.http import JsonResponse

from gateway.auth import api_models, key_from_request
from gateway.errors import openai_error


async def models_list(request):
    if request.method != "GET":
        return openai_error(405, "Use GET for /v1/models.")
    key, error = await key_from_request(request)
    if error:
        return error
    models = await sync_to_async(lambda: list(api_models(key).values_list("model_id", "pk")))()
    data = [{"id": model_id, "object": "model", "created": 0, "owned_by": "chatsite"} for model_id, _ in models]
    return JsonResponse({"object": "list", "data": data})
