"""The scope of an HTTP request, for tests that serve one through an ASGI application themselves."""

from asgiref.sync import sync_to_async
from django.test import Client

CSRF_SECRET = "c" * 32


async def logged_in_form_headers(user) -> dict[str, str]:
    """The headers of a form a browser logged in as `user` posts: its session, its CSRF cookie and token."""
    browser = await sync_to_async(Client)()
    await sync_to_async(browser.force_login)(user)
    return {
        "cookie": f"sessionid={browser.cookies['sessionid'].value}; csrftoken={CSRF_SECRET}",
        "x-csrftoken": CSRF_SECRET,
        "content-type": "application/x-www-form-urlencoded",
    }


def http_scope(path: str, body: bytes, headers: dict[str, str], *, method: str = "POST") -> dict:
    """A request (a POST unless `method` says) of `body` to `path` with `headers` (and Host, Content-Length), as
    daphne passes one on."""
    headers = {"host": "testserver", "content-length": str(len(body))} | headers
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
