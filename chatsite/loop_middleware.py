"""Django's middleware, with the hooks that do no I/O called on the event loop for async requests.

Django's MiddlewareMixin runs each process_request and process_response of
an async request through sync_to_async, and its handler each process_view: a
hop to a worker thread and back, each about 100 µs of CPU here, ten for
every request, although these hooks wait on nothing. The cases that do
wait still go to the request's worker thread: a session or messages to
save, an upload to parse that may be written to disk.

settings.MIDDLEWARE names these classes; Django's deploy checks, which
look for its own by name, find them through `Middleware` in settings.py.
"""

from functools import partial

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware, get_user
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware

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


class LoopSecurityMiddleware(OnTheLoop, SecurityMiddleware):
    pass


class LoopSessionMiddleware(OnTheLoop, SessionMiddleware):
    """The session is created unread; only saving it waits on the database, and only a changed one is saved."""

    def response_needs_thread(self, request, response) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class LoopCommonMiddleware(OnTheLoop, CommonMiddleware):
    pass


class LoopCsrfViewMiddleware(OnTheLoop, CsrfViewMiddleware):
    """The token is checked against the cookie's secret; a POST's form is parsed for it (Django reads it first).

    A body larger than FILE_UPLOAD_MAX_MEMORY_SIZE was spooled to disk, and
    its files are written to disk as they are parsed: that is done on the
    thread. CSRF_USE_SESSIONS would read the session here, so it is refused.
    """

    def __init__(self, get_response):
        if settings.CSRF_USE_SESSIONS:
            raise ImproperlyConfigured("LoopCsrfViewMiddleware keeps the CSRF secret in its cookie: CSRF_USE_SESSIONS")
        super().__init__(get_response)

    async def process_view(self, request, callback, callback_args, callback_kwargs):
        check = super().process_view
        if _body_on_disk(request):
            return await sync_to_async(check, thread_sensitive=True)(request, callback, callback_args, callback_kwargs)
        return check(request, callback, callback_args, callback_kwargs)


def _body_on_disk(request) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    except ValueError:
        return True  # Django's parsing, on the thread, says what is wrong with it


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


class LoopXFrameOptionsMiddleware(OnTheLoop, XFrameOptionsMiddleware):
    pass
