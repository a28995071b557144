"""The scope of an HTTP request, for tests that serve one through an ASGI application themselves."""


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
