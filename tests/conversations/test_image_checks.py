"""The upload check of images, for every input: an image we take, with its real type and size, or a clear refusal."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import given
from hypothesis import strategies as st

from conversations.services.images import ImageRefused, image_check
from tests.images import BMP_IMAGE, png_image

HEADERS = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8": "image/jpeg",
    b"GIF87a": "image/gif",
    b"GIF89a": "image/gif",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ": "image/webp",
    b"RIFF\x00\x00\x00\x00WEBPVP8L": "image/webp",
    b"RIFF\x00\x00\x00\x00WEBPVP8X": "image/webp",
}


@pytest.fixture(autouse=True)
def limits(settings):
    settings.CHAT_IMAGE_MAX_BYTES = 10_000


# Names as a browser sends them: a file's name, never a path.
NAMES = st.text(st.characters(exclude_characters="/\\\x00"), max_size=50).map(lambda text: f"f{text}")


@given(header=st.sampled_from(sorted(HEADERS)), rest=st.binary(max_size=64), name=NAMES)
def test_any_file_is_taken_as_the_image_its_bytes_say_or_refused_by_name(header, rest, name):
    upload = SimpleUploadedFile(name, header + rest, content_type="image/png")

    try:
        image = image_check(upload)
    except ImageRefused as refused:
        assert str(refused) == f"{upload.name} is not a PNG, JPEG, GIF or WebP image."
    else:
        assert image.content_type == HEADERS[header]
        assert image.width > 0 and image.height > 0
        assert image.data == header + rest


@given(data=st.binary(max_size=200))
def test_bytes_without_an_image_header_are_refused(data):
    if any(data.startswith(header) for header in HEADERS) or data.startswith(b"RIFF"):
        return
    with pytest.raises(ImageRefused):
        image_check(SimpleUploadedFile("photo.png", data or b"x"))


def test_a_real_png_is_taken_whatever_its_name_and_a_bitmap_is_not():
    image = image_check(SimpleUploadedFile("holiday.gif", png_image(7, 5), content_type="image/gif"))

    assert (image.name, image.content_type, image.width, image.height) == ("holiday.gif", "image/png", 7, 5)
    with pytest.raises(ImageRefused, match=r"^x\.png is not a PNG, JPEG, GIF or WebP image\.$"):
        image_check(SimpleUploadedFile("x.png", BMP_IMAGE))
