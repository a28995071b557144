"""Database work from async code: one place that decides which thread runs it and keeps its connection healthy."""

import asyncio
import contextvars
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, sync_to_async
from django.conf import settings
from django.db import connections

P = ParamSpec("P")
T = TypeVar("T")


class WorkerThread(ThreadPoolExecutor):
    """One thread that runs sync work for many requests and steps, one call at a time, counting what it has queued."""

    def __init__(self, name: str):
        super().__init__(max_workers=1, thread_name_prefix=name)
        # Each count is written by one thread only (the event loop's, the worker's), so neither needs a lock.
        self.submitted = 0
        self.finished = 0

    def submit(self, function, /, *args, **kwargs):
        self.submitted += 1
        return super().submit(self._counted, function, *args, **kwargs)

    def _counted(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            # Whatever ran here (a step, a sync view, a middleware's hook) hands its connections back as it
            # ends, so the next call on this thread starts with none: chatsite/asgi.py relies on that.
            connections_release()
            self.finished += 1

    def queued(self) -> int:
        return self.submitted - self.finished


class WorkerThreads:
    """The process's few threads for sync work: Django's sync middleware and views, and database steps.

    Django's ASGI handler would give every request a thread of its own until
    its response ends, so every open stream would hold one (2,000 streams,
    2,000 threads). Here a request is given the least busy of these threads
    for its sync parts instead (chatsite.asgi), and a database step takes
    whichever is least busy when it starts. Each thread holds at most one
    connection, so the connections do not grow with the requests in flight.

    Sync code running on these threads must not wait (async_to_sync) for
    async code that waits for a database step: the step may be queued on
    the very thread that waits.
    """

    def __init__(self, count: int):
        self.workers = [WorkerThread(f"worker-{n}") for n in range(count)]
        self._turns = itertools.cycle(range(count))

    def least_busy(self) -> WorkerThread:
        # Start the search at a different thread each time, so that idle threads take turns.
        start = next(self._turns)
        order = self.workers[start:] + self.workers[:start]
        return min(order, key=WorkerThread.queued)

    def connections_close(self) -> None:
        """Close what each thread holds, waiting for it: before a test database is dropped or the pool closed."""
        for worker in self.workers:
            worker.submit(connections.close_all).result()


@cache
def worker_threads() -> WorkerThreads:
    return WorkerThreads(settings.WORKER_THREADS)


async def db_step(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a sync database step on the least busy worker thread, not on the request's.

    A request that lasts as long as a stream would otherwise keep its thread's
    database connection for its whole life, and steps of many requests would
    wait for each other on one thread.
    """
    if asyncio.get_running_loop() in AsyncToSync.loop_thread_executors:
        # Async code that sync code (a test) runs with async_to_sync: run on that caller's thread, in its transaction.
        return await asyncio.create_task(sync_to_async(_step)(function, *args, **kwargs), context=contextvars.Context())
    worker = worker_threads().least_busy()
    return await sync_to_async(_step, thread_sensitive=False, executor=worker)(function, *args, **kwargs)


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
