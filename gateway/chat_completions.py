"""The OpenAI-compatible /v1 API: apps and SDKs send a site key, the provider key stays here.

OpenAI's semantics apply: the reply belongs to the request, and a client that
disconnects cancels the upstream call. Quotas, rate limits and usage records
are the same services the web chat uses; each call is recorded against the
user and the key.
"""

import re
from collections.abc import AsyncIterator

from django.http import JsonResponse

from accounts.billing.metered import MeteredCall
from conversations.llm import (
    ReplyStream,
    UpstreamError,
)
from gateway.chat_request import ChatRequest, chat_request_parse
from gateway.decorators import api_view
from gateway.errors import stream_error_event
from gateway.metering import (
    CallAsk,
    body_checked,
    chat_body,
    chat_completion,
    chat_stream_open,
    metered_call_open,
    relay_response,
)


def _call_ask(chat: ChatRequest) -> CallAsk:
    return CallAsk(
        chat.model, chat.messages, chat.max_tokens, prompt_extra=chat.options, image_params=chat.image_params
    )


@api_view(methods=("POST",), authenticate=False)
async def chat_completions(request):
    """One metered call: reserved before the upstream hears of it, settled on every exit.

    The request counts as sent from the moment it leaves for the provider: a
    client that goes away after that is billed the prompt's estimate (the
    provider bills it too); a refusal by the provider bills nothing. The
    provider's refusals reach the app as the provider said them, and are not
    retried here: the app's SDK retries them itself.
    """
    chat = body_checked(request, chat_request_parse)
    call = await metered_call_open(request, chat, _call_ask)
    upstream_body = chat_body(call, chat.messages, chat.options)
    if chat.stream:
        stream = await chat_stream_open(call, upstream_body)
        relay = _relay(stream, call, chat.include_usage)
        return relay_response(request, relay, stream, call)
    async with call:
        completion = await chat_completion(call, upstream_body)
        choice = completion["choices"][0]
        call.completion_text = choice["message"].get("content") or ""
        call.finish_reason = choice.get("finish_reason") or ""
    return JsonResponse(completion)


async def _relay(stream: ReplyStream, call: MeteredCall, include_usage: bool) -> AsyncIterator[bytes]:
    """The upstream's events byte for byte as they come, minus the usage chunk the app did not ask for.

    Only the events that carry usage, a finish reason or an error are parsed
    (in llm.ReplyStream.raw_events). The call is settled before the app hears
    the end, so its record is there when the app looks; if the app
    disconnects, closing the upstream stops the tokens and what was used is
    settled then.
    """
    ending = b"data: [DONE]\n\n"
    relayed = 0
    async with call:
        try:
            async for event in stream.raw_events():
                if not include_usage and USAGE_ONLY.search(event):
                    continue
                relayed += 1
                yield event
        except UpstreamError as failure:
            ending = stream_error_event(failure)
        finally:
            await stream.close()
            call.usage, call.finish_reason = stream.usage, stream.finish_reason or ""
            # Without usage (a stream cut short), the text is not at hand: OpenAI streams about a token an event.
            call.completion_estimate = relayed
    yield ending


# The last chunk when usage is asked for: no choices, only usage. We always ask, to bill every call.
USAGE_ONLY = re.compile(rb'"choices"\s*:\s*\[\s*\]')
