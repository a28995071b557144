"""What the configured upstream offers: the models it lists, and (llama-cpp-python's server) exact token counts.

The model list is read from the upstream's GET /models at most every
UPSTREAM_MODELS_INTERVAL seconds, by each process for itself (a few bytes on
loopback or from OpenAI; nothing to share through Redis), and kept in memory:
the picker reads it without waiting, a reply checks it before it goes out. A
failed read keeps the last good list, logs why, and is tried again after
RETRY_AFTER_FAILURE seconds (or the interval, if shorter). Before the first
good read nothing is known, and nothing is hidden: the reply's own check reads
the list first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from accounts.billing.metered import Usage
from conversations.llm import UpstreamError, completion_create, model_ids_list, tokens_count

logger = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = 30.0
# Seconds a reply's end waits for llama-cpp-python's server to count its tokens. The server serves one
# request at a time: behind another reply being generated, the count would hold this one's end back.
COUNT_TIMEOUT = 3.0


@dataclass(frozen=True)
class UpstreamOffer:
    model_ids: frozenset[str]
    # Tokens llama-cpp-python's server counts in an empty text (its BOS token, if the model has one);
    # None when the upstream cannot count tokens for us.
    empty_text_tokens: int | None


@dataclass
class _Known:
    offer: UpstreamOffer | None = None
    read_at: float = float("-inf")
    tried_at: float = float("-inf")


# By base URL: tests point the site at one upstream after another.
_known: dict[str, _Known] = {}


def served_model_ids() -> frozenset[str] | None:
    """The model ids the upstream listed at its last good read; None before the first one."""
    known = _known.get(settings.OPENAI_BASE_URL)
    return known.offer.model_ids if known and known.offer else None


async def upstream_offer() -> UpstreamOffer | None:
    """What the upstream offers, read again when the last read is older than UPSTREAM_MODELS_INTERVAL.

    None when it has never answered; a failed read keeps the last good answer.
    """
    base_url = settings.OPENAI_BASE_URL
    known = _known.setdefault(base_url, _Known())
    now = time.monotonic()
    interval = settings.UPSTREAM_MODELS_INTERVAL
    due = now - known.read_at >= interval and now - known.tried_at >= min(interval, RETRY_AFTER_FAILURE)
    if not due:
        return known.offer
    known.tried_at = now
    try:
        model_ids = await model_ids_list()
    except UpstreamError as error:
        logger.warning("could not read the upstream's model list (%s: %s); keeping the last one", error.code, error)
        return known.offer
    empty_text_tokens = known.offer.empty_text_tokens if known.offer else await _empty_text_tokens()
    known.offer, known.read_at = UpstreamOffer(model_ids, empty_text_tokens), now
    return known.offer


async def upstream_watch() -> None:
    """Keep a server process's view of the upstream's model list fresh, so the picker follows it."""
    while True:
        try:
            await upstream_offer()
        except Exception:  # whatever happened, the next round may do better; the last good list stays
            logger.exception("reading the upstream's model list failed")
        await asyncio.sleep(min(settings.UPSTREAM_MODELS_INTERVAL, RETRY_AFTER_FAILURE))


async def _empty_text_tokens() -> int | None:
    try:
        return await tokens_count("")
    except UpstreamError:  # not llama-cpp-python's server: a 404
        return None


async def usage_counted_by_server(*, model_id: str, messages: list[dict], completion_text: str) -> Usage | None:
    """The usage of a streamed reply, counted by a llama-cpp-python server, which sends none in its streams.

    The prompt is counted by the server itself: the same request, not
    streamed, for one token (it applies the model's chat template, and its
    cache of the prompt just read makes this cost a token or two); the reply
    by its tokenizer, less the tokens it puts in any text (a BOS). None from
    any other upstream, or when the server cannot say within COUNT_TIMEOUT.
    """
    offer = await upstream_offer()
    if offer is None or offer.empty_text_tokens is None:
        return None
    try:
        async with asyncio.timeout(COUNT_TIMEOUT):
            probe = await completion_create({"model": model_id, "messages": messages, "max_tokens": 1})
            prompt_tokens = int(probe["usage"]["prompt_tokens"])
            completion_tokens = await tokens_count(completion_text) - offer.empty_text_tokens if completion_text else 0
    except (UpstreamError, TimeoutError, KeyError, TypeError, ValueError) as error:
        logger.info("the local model server did not count a reply's tokens (it is estimated): %r", error)
        return None
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=max(completion_tokens, 0))
