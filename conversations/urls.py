from django.urls import path

from conversations import image_views, version_views, views

app_name = "conversations"
urlpatterns = [
    # The hottest first (see chatsite/urls.py): a message sent, its reply watched.
    path("c/<int:pk>/messages/", views.message_create, name="message_create"),
    path("c/<int:pk>/messages/<int:message_pk>/stream/", views.reply_stream, name="reply_stream"),
    path("", views.home, name="home"),
    path("c/new/messages/", views.message_create, name="start"),
    path("search/", views.search, name="search"),
    path("c/<int:pk>/", views.detail, name="detail"),
    path("c/<int:pk>/system-prompt/", views.system_prompt_update, name="system_prompt"),
    path("c/<int:pk>/rename/", views.rename, name="rename"),
    path("c/<int:pk>/delete/", views.delete, name="delete"),
    path("c/<int:pk>/reset/", views.reset, name="reset"),
    path("c/<int:pk>/events/", views.chat_events, name="events"),
    path("c/<int:pk>/export/markdown/", views.export_markdown, name="export_markdown"),
    path("c/<int:pk>/export/json/", views.export_json, name="export_json"),
    path("c/<int:pk>/images/<int:image_pk>/", image_views.image_show, name="image"),
    path("c/<int:pk>/messages/<int:message_pk>/", views.message_detail, name="message_detail"),
    path("c/<int:pk>/messages/<int:message_pk>/stop/", views.reply_stop, name="reply_stop"),
    path("c/<int:pk>/messages/<int:message_pk>/regenerate/", version_views.reply_regenerate, name="reply_regenerate"),
    path("c/<int:pk>/messages/<int:message_pk>/edit/", version_views.message_edit, name="message_edit"),
    path("c/<int:pk>/messages/<int:message_pk>/continue/", version_views.reply_continue, name="reply_continue"),
    path("c/<int:pk>/messages/<int:message_pk>/show/", version_views.version_show, name="version_show"),
    path("c/<int:pk>/messages/<int:message_pk>/controls/", version_views.message_controls, name="message_controls"),
]
