"""How many prompt tokens an image is, by OpenAI's rules for its vision models.

Low detail costs a model's base tokens. High (and auto, which may choose high)
costs the base plus tile tokens per 512-pixel tile, after the image is scaled
down to fit 2048x2048 and then until its shortest side is at most 768. So an
image is never more than 8 tiles (768x2048), which is the bound when its size
is unknown (an image given by URL, or a file we cannot read the size of).
Models differ in base and tile tokens (gpt-4o: 85 and 170; gpt-4o-mini: 2833
and 5667, priced to cost what gpt-4o's do): the catalog holds them per model.
"""

import base64
import binascii
import math
import struct
from dataclasses import dataclass

TILE = 512
FIT_WITHIN = 2048
SHORTEST_SIDE = 768
MAX_TILES = math.ceil(SHORTEST_SIDE / TILE) * math.ceil(FIT_WITHIN / TILE)


def high_detail_tiles(width: int, height: int) -> int:
    """The 512-pixel tiles of an image of this size once scaled as the provider scales it."""
    scale = min(1.0, FIT_WITHIN / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, SHORTEST_SIDE / min(width, height))
    return math.ceil(width * scale / TILE) * math.ceil(height * scale / TILE)


@dataclass(frozen=True)
class ImageTokenRule:
    """A model's image prices in tokens: what a low-detail image costs, and each tile of a high-detail one."""

    base_tokens: int
    tile_tokens: int

    def tokens(self, *, detail: str, size: tuple[int, int] | None) -> int:
        if detail == "low":
            return self.base_tokens
        tiles = MAX_TILES if size is None else high_detail_tiles(*size)
        return self.base_tokens + self.tile_tokens * tiles


# gpt-4o's, OpenAI's published example: for prompts measured without a catalog model.
GPT_4O_IMAGES = ImageTokenRule(base_tokens=85, tile_tokens=170)

# Enough of a data URL's image to find its size: JPEG keeps it after its metadata, often tens of KB.
HEADER_CHARS = 1_400_000


def image_url_tokens(image_url: dict, rule: ImageTokenRule) -> int:
    """The tokens of a Chat Completions image part's `image_url` ({"url": ..., "detail": ...})."""
    return rule.tokens(detail=image_url.get("detail") or "auto", size=data_url_image_size(image_url["url"]))


def data_url_image_size(url: str) -> tuple[int, int] | None:
    """Width and height of the image in a base64 data URL, or None (another URL, or a size we cannot read)."""
    if not url.startswith("data:") or ";base64," not in url[:40]:
        return None
    payload = url.split(",", 1)[1][:HEADER_CHARS]
    try:
        data = base64.b64decode(payload[: len(payload) // 4 * 4])
    except (binascii.Error, ValueError):
        return None
    return image_size(data)


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG, GIF, WebP or JPEG file's header; None if it is none of them or cut short."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            size = struct.unpack(">II", data[16:24])
        elif data[:6] in (b"GIF87a", b"GIF89a"):
            size = struct.unpack("<HH", data[6:10])
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            size = _webp_size(data)
        elif data.startswith(b"\xff\xd8"):
            size = _jpeg_size(data)
        else:
            return None
    except (struct.error, ValueError):  # cut short: unpacking (or taking apart) too few bytes
        return None
    return size if size and min(size) > 0 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        b0, b1, b2, b3 = data[21:25]
        return 1 + (b0 | (b1 & 0x3F) << 8), 1 + (b1 >> 6 | b2 << 2 | (b3 & 0x0F) << 10)
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    return None


# Start-of-frame markers, which carry the size; C4 (Huffman tables), C8 and CC (arithmetic coding) are not.
JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in JPEG_FRAME_MARKERS:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
    return None
