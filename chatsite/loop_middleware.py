"""Django's middleware, with the hooks that do no I/O called on the event loop for async requests.

Django's MiddlewareMixin runs each process_request and process_response of
an async request through sync_to_async: a hop to a worker thread and back,
each costing about 150 µs of CPU, although these hooks wait on
nothing, except where messages are stored (which may read the session from
the database): that case still goes to the request's worker thread.
(Security, sessions, CSRF and X-Frame-Options are left as Django's: its
deploy checks look for those classes by name, and skip the checks that
depend on them when they are not there.)
"""

from functools import partial

from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware, get_user
from django.contrib.messages.middleware import MessageMiddleware
from django.middleware.common import CommonMiddleware

from conversations.db import db_step


class OnTheLoop:
    """Mixed into a Django middleware: its hooks run in the event loop, unless `response_needs_thread`."""

    def response_needs_thread(self, request, response) -> bool:
        return False

    async def __acall__(self, request):
        response = self.process_request(request) if hasattr(self, "process_request") else None
        response = response or await self.get_response(request)
        if not hasattr(self, "process_response"):
            return response
        if self.response_needs_thread(request, response):
            return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        return self.process_response(request, response)


class LoopCommonMiddleware(OnTheLoop, CommonMiddleware):
    pass


class LoopAuthenticationMiddleware(OnTheLoop, AuthenticationMiddleware):
    """The user is loaded lazily, by the view; from async code in one database step, session and user together.

    Django's own `auser()` goes to a worker thread and back twice, once for
    the session and once for the user.
    """

    def process_request(self, request):
        super().process_request(request)
        request.auser = partial(_user_in_one_step, request)


async def _user_in_one_step(request):
    if not hasattr(request, "_acached_user"):
        request._acached_user = await db_step(get_user, request)  # get_user caches it for request.user too
    return request._acached_user


class LoopMessageMiddleware(OnTheLoop, MessageMiddleware):
    def response_needs_thread(self, request, response) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)  # stored, maybe in the session
