"""Server-sent events as a response, from the web chat (a reply, a chat page) and from /v1 (a streamed call).

Such a response lasts as long as its stream: minutes for a long reply, for
every open stream. By the time its first event goes out, the middleware is
done with the request and the view has read its body, so the request lets
go of all of that then rather than at the stream's end.
"""

import contextlib
from collections.abc import AsyncIterator

from django.http import StreamingHttpResponse

# What a request holds that nothing reads once its event stream has started: about 4 KB (session, user, headers),
# and the body it brought (a sent message's form and images, a /v1 call's whole prompt as read).
NOT_READ_WHILE_STREAMING = (
    "session",
    "user",
    "_cached_user",
    "_acached_user",
    "_messages",
    "headers",
    "COOKIES",
    "META",
    "_post",
    "_files",
    "_body",
)


def event_stream_response(request, events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """`events` (an async generator, closed with the response) as server-sent events, never buffered on the way."""
    response = _EventStreamResponse(_request_let_go(request, events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass frames through as they come
    return response


async def _request_let_go(request, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`events`, the request letting go of what it no longer needs as they start.

    Its body (Django's spooled file, up to FILE_UPLOAD_MAX_MEMORY_SIZE of it
    in memory) and its uploads are closed before the first event is awaited.
    """
    request.close()  # Django's handler closes them again as the response ends: a second close does nothing
    for name in NOT_READ_WHILE_STREAMING:
        request.__dict__.pop(name, None)
    async with contextlib.aclosing(events):  # closed with this generator, not left for the collector after it
        async for event in events:
            yield event


class _EventStreamResponse(StreamingHttpResponse):
    """Streamed by Django's handler straight from its events, which are bytes already.

    StreamingHttpResponse hands the handler its content through two async
    generators of its own (one that would take a sync iterator too, one that
    turns each piece into bytes): two steps more for every frame of every
    open stream. `streaming_content` (what tests and middleware read) is
    Django's as before.
    """

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterator
