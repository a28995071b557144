"""Images attached to chat messages: checked on upload, stored under MEDIA_ROOT, sent to the model as image parts.

An image's type is read from its first bytes, never from its name or the
browser's word, with the same header reader that sizes images for the meter
(accounts/billing/image_tokens.py): what we store is what we bill for.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.template.defaultfilters import filesizeformat

from accounts.billing.image_tokens import image_size
from conversations.models import Message, MessageImage

logger = logging.getLogger(__name__)

NAME_LENGTH = 200
KINDS = "PNG, JPEG, GIF or WebP"


class ImageRefused(ValueError):
    """An upload that is not an image we take; the message says why, naming the file."""


@dataclass(frozen=True)
class CheckedImage:
    name: str
    data: bytes
    content_type: str
    width: int
    height: int


def _content_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_check(upload: UploadedFile) -> CheckedImage:
    """The upload, read and checked: a PNG, JPEG, GIF or WebP (by its bytes) of at most CHAT_IMAGE_MAX_BYTES."""
    name = (upload.name or "image")[-NAME_LENGTH:]
    limit = settings.CHAT_IMAGE_MAX_BYTES
    if upload.size > limit:
        raise ImageRefused(f"{name} is {filesizeformat(upload.size)}; an image can be at most {filesizeformat(limit)}.")
    data = upload.read()
    content_type, size = _content_type(data), image_size(data)
    if content_type is None or size is None:
        raise ImageRefused(f"{name} is not a {KINDS} image.")
    return CheckedImage(name=name, data=data, content_type=content_type, width=size[0], height=size[1])


def images_attach(*, message: Message, images: Sequence[CheckedImage], written: list[str]) -> list[MessageImage]:
    """Store the images as the message's: each file under MEDIA_ROOT/chat-images/<user id>/, with its row. The rows.

    Each file's name goes into `written` as soon as it is on disk, for the
    caller to delete if its transaction fails (image_files_deleted_on_failure).
    """
    rows = []
    for image in images:
        row = MessageImage(
            message=message,
            name=image.name,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            bytes=len(image.data),
        )
        row.file.save(image.name, ContentFile(image.data), save=False)
        written.append(row.file.name)
        row.save()
        rows.append(row)
    return rows


def image_files_delete(names: Iterable[str]) -> None:
    for name in names:
        default_storage.delete(name)


@contextmanager
def image_files_deleted_on_failure() -> Iterator[list[str]]:
    """A list for the names of the image files written within (images_attach), deleted if the block raises:
    a rollback takes back the rows, not the files."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        image_files_delete(written)
        raise


def images_copy(*, source: Message, target: Message) -> None:
    """The images of a message on a new version of it (an edit): the same files, so they go when the chat goes."""
    MessageImage.objects.bulk_create(
        MessageImage(
            message=target,
            file=image.file.name,
            name=image.name,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            bytes=image.bytes,
        )
        for image in source.images.all()
    )


def image_files_delete_on_commit(messages) -> None:
    """When the transaction that deletes these messages commits, delete their image files too."""
    names = set(MessageImage.objects.filter(message__in=messages).values_list("file", flat=True))

    if names:
        transaction.on_commit(lambda: image_files_delete(names))


def image_data_url(image: MessageImage) -> str | None:
    """The image inline, as the upstream gets it (it cannot fetch our owner-only URLs); None if its file is gone."""
    try:
        with default_storage.open(image.file.name, "rb") as file:
            encoded = base64.b64encode(file.read()).decode()
    except FileNotFoundError:
        # MEDIA_ROOT lost or not shared by every server process: the chat goes on without the image.
        logger.warning("The file of image %s (%s) is missing; it is left out of the prompt.", image.pk, image.file.name)
        return None
    return f"data:{image.content_type};base64,{encoded}"


def content_with_images(text: str, images: list[MessageImage]) -> str | list[dict]:
    """A user message's content as sent upstream: its text alone, or its text and one image part per image."""
    urls = [url for url in map(image_data_url, images) if url]
    if not urls:
        return text
    return [{"type": "text", "text": text}, *({"type": "image_url", "image_url": {"url": url}} for url in urls)]


def content_text(content: str | list[dict]) -> str:
    """The text of a message's content, whether a string or parts (its text parts: images are left out)."""
    if isinstance(content, str):
        return content
    return " ".join(part["text"] for part in content if part["type"] == "text")
