"""Cancel a coroutine at exactly its n-th await, as a client that goes away at that moment would make Django do."""

import asyncio
import types
from collections.abc import Callable, Coroutine


@types.coroutine
def held_at_await(coro: Coroutine, n: int, on_held: Callable[[], None]):
    """Run `coro`; at its n-th suspension call `on_held` and keep it waiting there until it is cancelled.

    While held, `coro` makes no progress even if what it awaits completes, so
    the cancel lands on that very await, as Task.cancel() lands: the awaited
    future is cancelled and CancelledError is thrown in at that point. Awaits
    that need not wait (an already finished future) are not suspensions and do
    not count. Returns what `coro` returns; if it ends before its n-th
    suspension, `on_held` is never called.
    """
    suspensions = 0
    value, error = None, None
    while True:
        try:
            awaited = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as stop:
            return stop.value
        suspensions += 1
        if suspensions == n:
            on_held()
            try:
                yield from asyncio.get_running_loop().create_future()
            except asyncio.CancelledError as cancelled:
                if awaited is not None:
                    awaited.cancel()
                value, error = None, cancelled
                continue
        try:
            value, error = (yield awaited), None
        except BaseException as exc:  # a cancel or an error thrown in by the task: pass it on
            value, error = None, exc
