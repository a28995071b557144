"""An image attached to a message, served to its owner alone: MEDIA_ROOT is never published."""

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET

from conversations.models import MessageImage


@login_required
@require_GET
def image_show(request, pk: int, image_pk: int):
    image = get_object_or_404(
        MessageImage, pk=image_pk, message__conversation_id=pk, message__conversation__user=request.user
    )
    try:
        file = default_storage.open(image.file.name, "rb")
    except FileNotFoundError:
        raise Http404("The image's file is gone.") from None
    response = FileResponse(file, content_type=image.content_type)
    # The browser may keep it, but no shared cache: it is one user's.
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
