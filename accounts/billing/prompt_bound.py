"""How many tokens a prompt can be at most, and about how many it is.

The bound must never undercount, whatever the script: quotas reserve it before
a call, so a low bound would let parallel calls spend past a limit. The
providers' tokenizers (OpenAI's o200k and cl100k, SmolLM2's GPT-2 style) are
byte-level BPE: every token stands for at least one byte of UTF-8, so a text
never has more tokens than bytes. Each message adds a few tokens of framing
(role and separators) on top of its text, and some chat templates add text of
their own once (tests/accounts/test_prompt_bound.py checks the local model's).
Images are not text: an image part counts by the model's image rule
(accounts/billing/image_tokens.py), never by the bytes of its URL.
"""

import json
import math

from accounts.billing.image_tokens import GPT_4O_IMAGES, ImageTokenRule, image_url_tokens

# Tokens a chat template adds around each message, and once to prime the reply:
# OpenAI's published counting uses 3 and 3; one more each leaves room for other templates.
MESSAGE_FRAMING_TOKENS = 4
REPLY_PRIMING_TOKENS = 3
# Text a chat template may add of its own accord: SmolLM2's (the local model's) puts a system
# message of 21 tokens before a chat that has none.
TEMPLATE_TEXT_TOKENS = 24


def _text_of(content) -> str:
    """A message's content as the text that is tokenized: strings as they are, anything else as its JSON."""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def _images_apart(message: dict) -> tuple[dict, list[dict]]:
    """The message without its image parts, and the `image_url` of each of them."""
    content = message.get("content")
    if not isinstance(content, list):
        return message, []
    images = [part["image_url"] for part in content if isinstance(part, dict) and part.get("type") == "image_url"]
    if not images:
        return message, []
    rest = [part for part in content if not (isinstance(part, dict) and part.get("type") == "image_url")]
    return message | {"content": rest}, images


def prompt_tokens_bound(messages: list[dict], *, extra: object = None, images: ImageTokenRule = GPT_4O_IMAGES) -> int:
    """The most tokens `messages` (plus `extra`: tools, a response format...) can take, for any tokenizer above.

    A message's role, name and tool calls count as their UTF-8 bytes too, so
    nothing that is sent is left out of the bound; image parts count by the
    model's image rule `images`.
    """
    total = REPLY_PRIMING_TOKENS + TEMPLATE_TEXT_TOKENS
    for message in messages:
        message, image_urls = _images_apart(message)
        total += MESSAGE_FRAMING_TOKENS + sum(image_url_tokens(image_url, images) for image_url in image_urls)
        for value in message.values():
            total += len(_text_of(value).encode())
    if extra:
        total += len(_text_of(extra).encode())
    return total


def estimate_tokens(text: str) -> int:
    """About four characters a token, as for English text; only where the upstream sent no usage."""
    return math.ceil(len(text) / 4)


def prompt_tokens_estimate(messages: list[dict], *, images: ImageTokenRule = GPT_4O_IMAGES) -> int:
    """About how many tokens the prompt had: billed, flagged as estimated, when the upstream sent no usage."""
    total = 0
    for message in messages:
        message, image_urls = _images_apart(message)
        total += estimate_tokens(_text_of(message.get("content") or ""))
        total += sum(image_url_tokens(image_url, images) for image_url in image_urls)
    return total
