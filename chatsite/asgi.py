import asyncio
import contextvars
import functools
import os

import django
from asgiref.sync import ThreadSensitiveContext
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections, reset_queries
from django.http import HttpRequest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

# The request the handler made in this task (DjangoHandler.create_request), until its handling ends.
_request_made: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar("request_made", default=None)


class DjangoHandler(ASGIHandler):
    """Django's ASGI handler, leaving nothing of a request to the garbage collector.

    Whatever is left in a reference cycle waits for the collector's rare full
    pass: after 2,000 streams closed, about 34 KB of every `/v1` stream and
    18 KB of every web one were still held for it (bench/README.md).

    - Django's listener raises RequestAborted in its task, and its handler
      re-raises it to ignore it: the exception keeps the handler's frame,
      which keeps the task, which keeps the exception (the request, its
      response, daphne's request; about 130 objects). Ending the listener
      without an exception is the same to the handler: it cancels the view
      either way.
    - A request holds what holds it back: the messages' storage, django-htmx's
      details and the lazy user's closure each keep the request, with its
      session, headers and body. Once the handler is done with a request
      (its response sent and closed), nothing reads it: it lets go of all it
      holds.
    """

    async def handle(self, scope, receive, send):
        made = _request_made.set(None)
        try:
            await super().handle(scope, receive, send)
        finally:
            request = _request_made.get()
            _request_made.reset(made)
            if request is not None:
                request.__dict__.clear()

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        _request_made.set(request)
        return request, error_response

    async def listen_for_disconnect(self, receive):
        try:
            await super().listen_for_disconnect(receive)
        except RequestAborted:
            return


django.setup(set_prefix=False)  # as get_asgi_application(): app modules can be imported from here on
django_application = DjangoHandler()

from conversations.db import worker_threads  # noqa: E402
from conversations.replies.runner import reply_runner  # noqa: E402

DISCONNECT = {"type": "http.disconnect"}


def _disconnect_told(receive):
    """`receive`, and how to tell the app through it that its client is gone."""
    put = getattr(getattr(receive, "__self__", None), "put_nowait", None)
    if put is not None:
        # daphne's receive is the get of the request's own queue (chatsite.serve.RequestMessages, or asyncio's):
        # a disconnect put there reaches Django as the client's would, and no task has to wait beside every
        # receive (about 1 KB an open stream).
        return receive, functools.partial(put, DISCONNECT)
    cancelled = asyncio.get_running_loop().create_future()
    return functools.partial(_receive_until, receive, cancelled), functools.partial(cancelled.set_result, None)


async def _receive_until(receive, cancelled: asyncio.Future) -> dict:
    """The server's next message, or a disconnect once `cancelled` is done."""
    if cancelled.done():
        return DISCONNECT
    message = asyncio.ensure_future(receive())
    try:
        await asyncio.wait([message, cancelled], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not message.done():
            message.cancel()  # cancelled here, or Django stopped listening
    return message.result() if message.done() else DISCONNECT


# Django hands a request's connections back when it starts and ends, each time in a hop to its thread
# and back. Here every call on a worker thread hands them back as it ends (conversations/db.py), so a
# request never starts with one left over. (Without these, DEBUG's log of queries is not emptied per
# request; Django keeps its last 9,000.)
signals.request_started.disconnect(close_old_connections)
signals.request_started.disconnect(reset_queries)
signals.request_finished.disconnect(close_old_connections)


class Site:
    """The site's ASGI application: Django's handler, with what this process adds around every request.

    One coroutine for all of it rather than a layer each: every layer's frame
    lives as long as its request, an open stream's too. Around each request:

    - The process's reply runner starts with its first request, sweeping up
      after dead processes from then on.
    - The request's sync parts run on the least busy of the process's worker
      threads. Django's handler gives every request a thread of its own, kept
      until its response ends: every open stream would hold one. Entered
      outside Django's, this context is the one its sync_to_async calls use.
    - The server cancelling the request reaches Django as its client's
      disconnect. On SIGTERM daphne cancels every request still running.
      Django's handler (5.2) does not pass that on: the view's task runs on,
      unfinished and unsettled, until the process is gone. A disconnect it
      does pass on: it cancels the view, which settles its calls as when the
      client goes, and daphne waits for that before it exits.
    - Static files are served by the app itself in the embedded set-up;
      behind nginx the /static/ prefix never reaches it (see deploy/).
    """

    def __init__(self, handler: ASGIHandler):
        self.django = handler
        self.static = ASGIStaticFilesHandler(handler)
        self.serving = False

    async def __call__(self, scope, receive, send):
        if not self.serving:
            reply_runner().serve()
            self.serving = True
        if scope["type"] != "http":
            return await self.django(scope, receive, send)
        app = self.static if scope["path"].startswith(self.static.base_url.path) else self.django
        receive, tell_disconnect = _disconnect_told(receive)
        async with ThreadSensitiveContext(executor=worker_threads().least_busy()):
            handler = asyncio.ensure_future(app(scope, receive, send))
            try:
                return await asyncio.shield(handler)
            except asyncio.CancelledError:
                tell_disconnect()
                await handler
                raise


application = Site(django_application)
