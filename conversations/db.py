"""Database work from async code: one place that decides which thread runs it and keeps its connection healthy."""

import asyncio
import contextvars

from asgiref.sync import sync_to_async


async def db_step(function, *args, **kwargs):
    """Run a sync database step on the process's shared worker thread, not the request's.

    A request that lasts as long as a stream would otherwise keep its own
    worker thread, and that thread's database connection, for its whole life.
    """
    return await asyncio.create_task(sync_to_async(function)(*args, **kwargs), context=contextvars.Context())


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
