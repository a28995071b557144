"""An open event stream (a reply watched, a chat page open) lets go of what its request held for the middleware,
and still passes on every event and ends its watch when its client goes."""

import asyncio
import weakref

from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from chatsite.event_streams import NOT_READ_WHILE_STREAMING, event_stream_response


class Session(dict):
    pass


async def test_a_stream_passes_every_event_on_and_its_request_lets_go_of_session_and_user():
    request = RequestFactory().get("/c/1/events/", HTTP_COOKIE="sessionid=abc")
    request.session, request.user = Session(chat="kept until the stream starts"), AnonymousUser()
    session = weakref.ref(request.session)

    async def events():
        yield b"retry: 1500\n\n"
        yield b"event: done\ndata: {}\n\n"

    response = event_stream_response(request, events())
    received = [event async for event in response]

    assert received == [b"retry: 1500\n\n", b"event: done\ndata: {}\n\n"]
    assert session() is None
    assert not any(name in request.__dict__ for name in NOT_READ_WHILE_STREAMING)
    assert request.path == "/c/1/events/"  # what the handler may still log


async def test_a_client_that_goes_ends_the_watch():
    request = RequestFactory().get("/c/1/events/")
    watching = []

    async def events():
        watching.append(True)
        try:
            while True:
                yield b": keep-alive\n\n"
        finally:
            watching.pop()

    response = event_stream_response(request, events())
    stream = aiter(response)
    assert await anext(stream) == b": keep-alive\n\n"
    assert watching == [True]

    await stream.aclose()  # what Django's handler does when the client disconnects, then it lets the response go
    del stream, response
    for _ in range(5):
        await asyncio.sleep(0)  # the loop closes the generators let go (asyncio's async generator finalizer)

    assert watching == []
