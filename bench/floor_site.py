"""The least issue 7 asks of a metered /v1 call, on the fixed stack, with nothing of the site's own code.

floor_bench.py serves it as it serves bare_relay.py (chatsite.serve: daphne on
uvloop) and measures it the same way. Where bare_relay.py is the server alone,
this is the server, Django and the steps no metered call can go without, each
done the cheapest way the stack allows, on the event loop (no worker thread):

- Django's own ASGI handler, no middleware, no template, one async view;
- the caller's key checked and the call reserved: one PostgreSQL statement in
  autocommit (no limits read, no lock: less than a quota that holds needs);
- a rate limit: one Redis round trip (INCR and EXPIRE pipelined);
- the upstream called through the openai SDK's AsyncOpenAI (the issue's point
  7), its stream read raw and relayed byte for byte, nothing parsed;
- the call settled: one PostgreSQL statement when the stream ends.

FLOOR_SITE_DATABASE and FLOOR_SITE_REDIS say where, FLOOR_SITE_UPSTREAM is the
fake's base URL, FLOOR_SITE_KEY the one key it knows. Its tables are temporary
(its connection's own).
"""

import asyncio
import json
import os

import django
import httpx2
import openai
import psycopg
import redis.asyncio
from django.conf import settings
from django.core import signals
from django.db import close_old_connections, reset_queries
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

CALLS_A_MINUTE = 10**6
TABLES = """
CREATE TEMP TABLE floor_key (secret text PRIMARY KEY, user_id integer NOT NULL);
CREATE TEMP TABLE floor_hold (id serial PRIMARY KEY, user_id integer NOT NULL, tokens integer NOT NULL);
CREATE TEMP TABLE floor_spent (user_id integer NOT NULL, tokens integer NOT NULL);
"""
RESERVE = """
INSERT INTO floor_hold (user_id, tokens) SELECT user_id, %s FROM floor_key WHERE secret = %s RETURNING id
"""
SETTLE = """
WITH dropped AS (DELETE FROM floor_hold WHERE id = %s RETURNING user_id)
INSERT INTO floor_spent (user_id, tokens) SELECT user_id, %s FROM dropped
"""


class Backing:
    """The process's one database connection, Redis client and upstream client, made with its first call."""

    def __init__(self):
        self.database: psycopg.AsyncConnection | None = None
        self.connecting = asyncio.Lock()  # the first calls come together: one connection for all
        # Calls wait for a free connection rather than fail: 200 streams start at once.
        pool = redis.asyncio.BlockingConnectionPool.from_url(os.environ["FLOOR_SITE_REDIS"], max_connections=20)
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        # No cap on connections, as the site's (httpx's default, 100, would queue half the paced streams).
        client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=None))
        upstream = os.environ["FLOOR_SITE_UPSTREAM"]
        self.upstream = openai.AsyncOpenAI(api_key="floor", base_url=upstream, http_client=client)

    async def connected(self) -> psycopg.AsyncConnection:
        if self.database is None:
            async with self.connecting:
                if self.database is None:
                    database = await psycopg.AsyncConnection.connect(os.environ["FLOOR_SITE_DATABASE"], autocommit=True)
                    await database.execute(TABLES)
                    await database.execute("INSERT INTO floor_key VALUES (%s, 1)", [os.environ["FLOOR_SITE_KEY"]])
                    self.database = database
        return self.database


_backing: Backing | None = None


async def chat_completions(request):
    global _backing
    _backing = _backing or Backing()
    secret = request.headers.get("Authorization", "")[7:]
    body = json.loads(request.body)
    async with _backing.redis.pipeline(transaction=False) as pipe:
        count, _ = await pipe.incr(f"floor:{secret}").expire(f"floor:{secret}", 60).execute()
    if count > CALLS_A_MINUTE:
        return JsonResponse({"error": {"message": "rate limited", "code": "rate_limit_exceeded"}}, status=429)
    database = await _backing.connected()
    # The prompt's bound (its UTF-8 bytes) and the most it may answer.
    reserved = await (await database.execute(RESERVE, [len(request.body) + body["max_tokens"], secret])).fetchone()
    if reserved is None:
        return JsonResponse({"error": {"message": "bad key", "code": "invalid_api_key"}}, status=401)
    upstream = await _backing.upstream.post(
        "/chat/completions", body=body, cast_to=httpx2.Response, stream=True, options={"max_retries": 0}
    )
    return StreamingHttpResponse(_relayed(upstream, database, reserved[0]), content_type="text/event-stream")


async def _relayed(upstream: httpx2.Response, database: psycopg.AsyncConnection, hold: int):
    relayed = 0
    try:
        async for piece in upstream.aiter_raw():
            relayed += 1
            yield piece
    finally:
        await upstream.aclose()
        await database.execute(SETTLE, [hold, relayed])


async def healthz(request):
    return HttpResponse("ok")


settings.configure(
    DEBUG=False,
    SECRET_KEY="floor",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
    # As the site's: no line logged for every upstream call.
    LOGGING={
        "version": 1,
        "disable_existing_loggers": False,  # Django's own (a 500's traceback) still go to the log
        "loggers": {name: {"level": "WARNING"} for name in ("httpx", "httpx2", "daphne")},
    },
)
urlpatterns = [path("v1/chat/completions", chat_completions), path("healthz", healthz)]
django.setup(set_prefix=False)
# As the site does (chatsite/asgi.py): with these, every request starts and ends with a hop to a thread and back.
signals.request_started.disconnect(close_old_connections)
signals.request_started.disconnect(reset_queries)
signals.request_finished.disconnect(close_old_connections)

from django.core.handlers.asgi import ASGIHandler  # noqa: E402  (needs the settings above)

application = ASGIHandler()
