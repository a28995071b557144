from django.urls import path, re_path

from gateway import chat_completions, embeddings, errors, models_list, realtime, responses

app_name = "gateway"
urlpatterns = [
    path("chat/completions", chat_completions.chat_completions, name="chat_completions"),
    path("responses", responses.responses, name="responses"),
    path("embeddings", embeddings.embeddings, name="embeddings"),
    path("models", models_list.models_list, name="models"),
    path("models/<path:model_id>", models_list.model_retrieve, name="model"),
    path("realtime/client_secrets", realtime.client_secrets, name="realtime_client_secrets"),
    # Last: any other path under /v1 is OpenAI's 404 in JSON, never Django's HTML page.
    re_path(r"^.*$", errors.unknown_path, name="unknown_path"),
]
