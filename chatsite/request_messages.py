"""The queue through which daphne hands a request's messages to the app (see chatsite.serve, which sets the
event loop's policy and changes Twisted as it is imported: this module does neither)."""

import asyncio


class RequestMessages:
    """A request's messages from daphne to the app (its body, then its client's disconnect), in order.

    What daphne needs of its asyncio.Queue, and no more: put_nowait() for the
    server, get() for the app. An asyncio.Queue makes four deques as it is
    made (about 3 KB), held as long as its request is, an open stream's too;
    this holds a list while messages wait and a future while the app does.
    """

    __slots__ = ("_messages", "_readers")

    def __init__(self) -> None:
        self._messages: list[dict] = []
        self._readers: list[asyncio.Future] = []

    def put_nowait(self, message: dict) -> None:
        self._messages.append(message)
        self._wake()

    def _wake(self) -> None:
        """The first reader still waiting is to take the next message."""
        while self._readers:
            reader = self._readers.pop(0)
            if not reader.done():
                reader.set_result(None)
                return

    async def get(self) -> dict:
        while not self._messages:
            reader = asyncio.get_running_loop().create_future()
            self._readers.append(reader)
            try:
                await reader
            except asyncio.CancelledError:
                if reader in self._readers:
                    self._readers.remove(reader)
                elif self._messages:
                    self._wake()  # woken for a message it will not take now: the next reader's
                raise
        return self._messages.pop(0)
