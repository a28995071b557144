"""POST /v1/responses: the Responses API, served by any catalog model through its Chat Completions.

The request is translated (gateway/responses_request.py), sent as a Chat
Completions call, and its answer told back as a Response or as the Responses
stream events (gateway/responses_output.py). It is one metered call like
/v1/chat/completions: the same key, rate limits, quotas and usage records,
and a client that disconnects cancels the upstream call, which is settled.
"""

from collections.abc import AsyncIterator

from django.http import JsonResponse

from accounts.billing.metered import MeteredCall
from conversations.llm import ReplyStream, UpstreamError
from gateway.decorators import api_view
from gateway.metering import (
    CallAsk,
    body_checked,
    chat_body,
    chat_completion,
    chat_stream_open,
    metered_call_open,
    relay_response,
)
from gateway.responses_output import ResponseEvents, response_from_completion, response_object
from gateway.responses_request import ResponsesRequest, responses_request_parse


def _call_ask(asked: ResponsesRequest) -> CallAsk:
    return CallAsk(
        asked.model, asked.messages, asked.max_tokens, prompt_extra=asked.chat_options, image_params=asked.image_params
    )


@api_view(methods=("POST",), authenticate=False)
async def responses(request):
    asked = body_checked(request, responses_request_parse)
    call = await metered_call_open(request, asked, _call_ask)
    upstream_body = chat_body(call, asked.messages, asked.chat_options)
    response = response_object(call.model.model_id, asked.echoed)
    if asked.stream:
        stream = await chat_stream_open(call, upstream_body)
        relay = _relay(stream, call, ResponseEvents(response))
        return relay_response(request, relay, stream, call)
    async with call:
        completion = await chat_completion(call, upstream_body)
        choice = completion["choices"][0]
        call.completion_text = (choice["message"].get("content") or "") + str(choice["message"].get("tool_calls") or "")
        call.finish_reason = choice.get("finish_reason") or ""
    return JsonResponse(response_from_completion(response, completion))


async def _relay(stream: ReplyStream, call: MeteredCall, events: ResponseEvents) -> AsyncIterator[bytes]:
    """The Response's events, as the upstream's chunks come; the call is settled before the last one is sent.

    If the app disconnects, closing the upstream stops the tokens, and what
    was generated so far is settled then.
    """
    async with call:
        try:
            yield events.opening()
            async for _, chunk in stream.chunks():
                if translated := events.take(chunk):
                    yield translated
            ending = events.closing(stream.finish_reason)
        except UpstreamError as failure:
            ending = events.failed(failure)
        finally:
            await stream.close()
            call.usage, call.finish_reason = stream.usage, stream.finish_reason or ""
            call.completion_text = events.text_so_far()
    yield ending
