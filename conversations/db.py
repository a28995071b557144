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
