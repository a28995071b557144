from django.urls import path

from gateway import chat_completions, models_list, realtime

app_name = "gateway"
urlpatterns = [
    path("chat/completions", chat_completions.chat_completions, name="chat_completions"),
    path("models", models_list.models_list, name="models"),
    path("realtime/client_secrets", realtime.client_secrets, name="realtime_client_secrets"),
]
