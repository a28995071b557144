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

from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.middleware.common import CommonMiddleware


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
    pass  # the user is loaded lazily, by the view


class LoopMessageMiddleware(OnTheLoop, MessageMiddleware):
    def response_needs_thread(self, request, response) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)  # stored, maybe in the session
