"""Images in the prompt bound: OpenAI's published figures, never below them, and never counted as URL bytes."""

import base64
import struct

from hypothesis import given
from hypothesis import strategies as st

from accounts.billing.image_tokens import (
    GPT_4O_IMAGES,
    MAX_TILES,
    ImageTokenRule,
    data_url_image_size,
    high_detail_tiles,
    image_size,
)
from accounts.billing.prompt_bound import prompt_tokens_bound, prompt_tokens_estimate

SIDES = st.integers(min_value=1, max_value=100_000)


def png(width: int, height: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x06\x00\x00\x00"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"


def jpeg(width: int, height: int) -> bytes:
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"Exif\x00" + b"\x00" * 4995  # metadata before the frame
    frame = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, height, width, 3) + b"\x00" * 6
    return b"\xff\xd8" + exif + frame + b"\xff\xd9"


def webp(width: int, height: int) -> bytes:
    extended = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 30) + b"WEBP" + extended + size


def data_url(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def test_openais_published_examples():
    # From OpenAI's vision guide, for gpt-4o: low 85; 1024x1024 high 765; 2048x4096 high 1105.
    assert GPT_4O_IMAGES.tokens(detail="low", size=(4096, 8192)) == 85
    assert GPT_4O_IMAGES.tokens(detail="high", size=(1024, 1024)) == 765
    assert GPT_4O_IMAGES.tokens(detail="high", size=(2048, 4096)) == 1105


@given(width=SIDES, height=SIDES, detail=st.sampled_from(["auto", "high", "low"]))
def test_an_image_of_unknown_size_is_bounded_by_the_largest_any_size_can_cost(width, height, detail):
    rule = ImageTokenRule(base_tokens=2833, tile_tokens=5667)

    assert high_detail_tiles(width, height) <= MAX_TILES
    assert rule.tokens(detail=detail, size=(width, height)) <= rule.tokens(detail=detail, size=None)


@given(width=st.integers(1, 16_383), height=st.integers(1, 16_383))
def test_the_size_is_read_from_each_format_header(width, height):
    for kind, make in [("png", png), ("gif", gif), ("jpeg", jpeg), ("webp", webp)]:
        assert image_size(make(width, height)) == (width, height), kind
        assert data_url_image_size(data_url(kind, make(width, height))) == (width, height), kind


def test_unreadable_images_and_urls_have_no_known_size():
    assert data_url_image_size("https://example.com/cat.png") is None
    assert data_url_image_size("data:image/png;base64,bm90IGFuIGltYWdl") is None
    assert image_size(png(0, 10)) is None
    assert image_size(b"\xff\xd8\xff\xe1\x00") is None  # cut short


def image_message(url: str, detail: str) -> dict:
    parts = [
        {"type": "text", "text": "What is it?"},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    ]
    return {"role": "user", "content": parts}


def test_an_image_counts_by_the_models_rule_not_by_the_bytes_of_its_url():
    big = data_url("png", png(1024, 1024) + b"\x00" * 3_000_000)

    bound = prompt_tokens_bound([image_message(big, "high")], images=GPT_4O_IMAGES)

    assert 765 < bound < 765 + 200
    assert prompt_tokens_estimate([image_message(big, "high")], images=GPT_4O_IMAGES) < 765 + 50


def test_an_image_by_url_is_bounded_at_the_most_its_detail_allows():
    rule = ImageTokenRule(base_tokens=2833, tile_tokens=5667)
    high = prompt_tokens_bound([image_message("https://x.test/a.png", "auto")], images=rule)
    low = prompt_tokens_bound([image_message("https://x.test/a.png", "low")], images=rule)

    assert high - low == 5667 * MAX_TILES
    assert low > 2833
