from django.urls import path

from gateway import chat_completions, embeddings, models_list, realtime, responses

app_name = "gateway"
urlpatterns = [
    path("chat/completions", chat_completions.chat_completions, name="chat_completions"),
    path("responses", responses.responses, name="responses"),
    path("embeddings", embeddings.embeddings, name="embeddings"),
    path("models", models_list.models_list, name="models"),
    path("realtime/client_secrets", realtime.client_secrets, name="realtime_client_secrets"),
]
