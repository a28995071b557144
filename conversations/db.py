"""Database work from async code: one place that decides which thread runs it and keeps its connection healthy."""

import asyncio
import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections

P = ParamSpec("P")
T = TypeVar("T")


async def db_step(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a sync database step on the process's shared worker thread, not the request's.

    A request that lasts as long as a stream would otherwise keep its own
    worker thread, and that thread's database connection, for its whole life.
    """
    return await asyncio.create_task(sync_to_async(_step)(function, *args, **kwargs), context=contextvars.Context())


async def db_step_to_end(function, *args, on_cancel=None, **kwargs):
    """db_step that runs to its end even if the caller is cancelled meanwhile (a client that went away).

    What the step did is then known: `on_cancel(result)` (a coroutine function)
    deals with it before the cancel goes on, so no await can leave a half-done
    piece of work, such as a held reservation, behind.
    """
    step = asyncio.ensure_future(db_step(function, *args, **kwargs))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        while not step.done():
            try:
                await asyncio.shield(step)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        if on_cancel is not None and not step.cancelled() and step.exception() is None:
            await on_cancel(step.result())
        raise


def _step(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    connections_release()
    try:
        return function(*args, **kwargs)
    finally:
        connections_release()


def connections_release() -> None:
    """What Django does after each request, for a thread that serves none.

    On PostgreSQL each connection goes back to the pool, which checks it
    before handing it out again: a connection that a restart broke is
    replaced, where a kept one would fail every later step of the process.
    A connection inside a transaction stays (a step runs inside one only in
    tests, on the test's own thread).
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
