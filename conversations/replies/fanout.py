"""The fan-out protocol: how a reply's text gets from its generator to every watcher, and Stop back.

A reply is generated in one process, by the task that holds its ReplyBroadcast.
Watchers in that process read the broadcast itself: they wait for its next
frame and take the text they lack, so a watcher costs nothing per token and a
slow client simply gets a bigger piece. nginx sends every request of a chat to
one process (deploy/nginx.conf), so that is the usual case.

Watchers in other processes go through the channels layer, where each process
has a single channel of its own, its Switchboard, whatever it watches: nothing
is subscribed per watcher, so nothing is left behind when one goes.

- The generator's switchboard joins the reply's control group while the reply
  is generated. Stop arrives there, and so does REPLY_WATCH from a process
  whose watchers lack the text: the generator sends that process the text so
  far, then every frame, then the end, until it hears REPLY_UNWATCH.
- A switchboard joins a chat's group while a page of the chat is open in its
  process, to hear a staff reset.

Frames carry character offsets in the reply, so a watching process can stitch
them together (Stitcher) in whatever order they arrive. Redis pub/sub may lose
a message: a watcher that misses a piece asks again, and one that hears
nothing at all falls back to the reply's status in the database.
"""

import asyncio
import contextlib
import heapq
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

# Message types. Every message names its reply (`reply_id`) or its chat (`conversation_id`).
REPLY_STOP = "reply.stop"  # to the control group: stop generating
REPLY_WATCH = "reply.watch"  # to the control group: send the text so far, then each frame, to `reply_to`
REPLY_UNWATCH = "reply.unwatch"  # to the control group: `reply_to` no longer watches
REPLY_FRAME = "reply.frame"  # to a watching process: `text` at character offset `start`
REPLY_END = "reply.end"  # to a watching process: the reply ended, `length` characters long, stored as `status`
CHAT_RESET = "chat.reset"  # to the chat's group: staff emptied the chat
CHAT_TITLE = "chat.title"  # to the chat's group: the chat was named `title`


def control_group(reply_id: int) -> str:
    """Where the process generating a reply hears Stop and watch requests."""
    return f"replyctl.{reply_id}"


def chat_group(conversation_id: int) -> str:
    """Processes with a page of the chat open."""
    return f"chat.{conversation_id}"


class Stitcher:
    """A reply's text put together from pieces that may come out of order, twice, or overlapping.

    Each piece starts at a character offset in the reply. `text` is the longest
    run from offset 0 that the pieces so far cover; pieces beyond a gap are held
    until the gap is filled.
    """

    def __init__(self) -> None:
        self.text = ""
        self._held: list[tuple[int, str]] = []

    def add(self, start: int, piece: str) -> str:
        """Take a piece; return the text it (and any held piece it connects) adds to `text`."""
        heapq.heappush(self._held, (start, piece))
        known = len(self.text)
        while self._held and self._held[0][0] <= len(self.text):
            start, piece = heapq.heappop(self._held)
            self.text += piece[len(self.text) - start :]
        return self.text[known:]

    @property
    def has_gap(self) -> bool:
        """Pieces are held that do not join up with `text` yet: one before them is missing."""
        return bool(self._held)


class LiveText:
    """A reply's text as its watchers read it: note `changes`, take what `shown` has beyond yours, and wait
    with changed_since() for the next change.

    Announced once per frame, whatever the number of watchers, so that waking
    them costs nothing per token. A count and the futures of the watchers
    waiting rather than an asyncio.Event swapped for a fresh one each frame:
    an Event is about 700 bytes (its deque), held by every reply in flight.
    """

    # Whether the text comes from another process, which may die without a word.
    remote = False

    def __init__(self) -> None:
        self.shown = ""
        self.ended = False
        # Once ended: the reply's status as stored, when its generator could say ("": read the database).
        self.status = ""
        self.changes = 0  # frames and the end announced so far
        self._waiting: list[tuple[float, asyncio.Future]] = []  # each waiting watcher's deadline and future
        # One timer for all the waits' deadlines, at the earliest (see _expire).
        self._timer: asyncio.TimerHandle | None = None

    async def changed_since(self, changes: int, within: float) -> bool:
        """Whether something is announced after the `changes` a watcher noted (at once if it was already)
        within `within` seconds: False when nothing was, and the watcher sends a keep-alive.

        Every watcher waits again after every frame, and a wait ends by a
        frame far more often than by its deadline: the reply's one timer, left
        where it is as waits come and go, rather than a timer made and
        cancelled for every watcher every frame (about 500 bytes a watcher).
        """
        if self.changes != changes:
            return True
        loop = asyncio.get_running_loop()
        deadline, waiter = loop.time() + within, loop.create_future()
        self._waiting.append((deadline, waiter))
        if self._timer is None or self._timer.when() > deadline:
            self._timer_at(deadline)
        try:
            return await waiter
        finally:
            if waiter.cancelled() or not waiter.result():  # not woken by a frame: no longer waiting
                with contextlib.suppress(ValueError):
                    self._waiting.remove((deadline, waiter))

    async def catch_up(self) -> None:
        """Ask for any text that cannot arrive by itself (only a remote reply can lack any)."""

    def _announce(self) -> None:
        self.changes += 1
        waiting, self._waiting = self._waiting, []
        for _, waiter in waiting:
            if not waiter.done():
                waiter.set_result(True)
        if self.ended and self._timer is not None:  # nobody waits for an ended reply: let it go at once
            self._timer.cancel()
            self._timer = None

    def _timer_at(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        """End the waits whose deadline passed; wait on for the earliest of the others, none if none is left."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        for deadline, waiter in self._waiting:
            if deadline <= now and not waiter.done():
                waiter.set_result(False)  # its watcher takes itself off the list as it wakes
        later = [deadline for deadline, waiter in self._waiting if not waiter.done()]
        if later:
            self._timer_at(min(later))


def _nothing_to_stop() -> None:
    pass


class ReplyBroadcast(LiveText):
    """The generator side of one reply being generated in this process."""

    def __init__(
        self, reply_id: int, *, conversation_id: int, user_id: int, on_stop: Callable[[], None], prefix: str = ""
    ):
        super().__init__()
        self.shown = prefix  # a continued reply goes on from the text it has
        self.reply_id = reply_id
        self.conversation_id, self.user_id = conversation_id, user_id  # whose it is, for watchers here
        self.on_stop = on_stop
        self._unshown: list[str] = []
        self._frame_timer: asyncio.TimerHandle | None = None
        self._last_frame_at = 0.0
        self._frame_interval = settings.STREAM_FRAME_INTERVAL  # read once a reply, not once a frame
        self._watching_processes: set[str] = set()
        self._sending: set[asyncio.Task] = set()
        self._board: Switchboard | None = None
        self._closed = False
        # Told each next frame's time, it may leave the upstream unread until just before (ReplyStream.read_before).
        self.read_before: Callable[[float], None] | None = None

    async def open(self) -> None:
        """Be found: by watchers in this process, and by Stop and watchers from others (the control group)."""
        board = await switchboard()
        await board.layer.group_add(control_group(self.reply_id), board.channel)
        self._board = board
        board.broadcasts[self.reply_id] = self

    def publish(self, text: str) -> None:
        """A delta from the upstream: cheap, it runs per token.

        The first goes out at once; later ones wait for the next frame,
        whatever the load, so reading the upstream never waits on watchers and
        a busy process sends bigger frames rather than more of them.
        """
        if not text or self._closed:
            return
        self._unshown.append(text)
        if not self.shown:
            self._frame()
        elif self._frame_timer is None:
            self._frame_timer = asyncio.get_running_loop().call_at(
                self._last_frame_at + self._frame_interval, self._frame
            )

    def text(self) -> str:
        """The whole text so far, shown to watchers or not yet."""
        return self.shown + "".join(self._unshown)

    async def close(self, status: str = "") -> None:
        """The last frame and the end, to every watcher; then this process stops listening for the reply.

        `status`: the reply's as stored (committed), which watchers then need
        not read from the database; "" when the generator cannot vouch for it.
        """
        if self._closed:
            return
        self._closed = True
        # Nothing left to stop. The generator's own method, kept, would keep it and this in a cycle until the
        # collector's full pass, with the upstream's stream and all the reply held.
        self.on_stop = _nothing_to_stop
        if self._frame_timer is not None:
            self._frame_timer.cancel()
        self._frame()
        self.status = status
        self.ended = True
        self._announce()
        board = self._board
        if board is None:
            return
        if board.broadcasts.get(self.reply_id) is self:
            del board.broadcasts[self.reply_id]
        try:
            # The frames still on their way first: a watching process needs them all before the end.
            await asyncio.gather(*self._sending, return_exceptions=True)
            end = {"type": REPLY_END, "reply_id": self.reply_id, "length": len(self.shown), "status": self.status}
            await self._send(list(self._watching_processes), end)
        finally:
            await board.layer.group_discard(control_group(self.reply_id), board.channel)

    def watch_from(self, channel: str) -> None:
        """Another process watches: the text so far to it now, and every frame from now on."""
        self._watching_processes.add(channel)
        self._send_soon([channel], {"type": REPLY_FRAME, "reply_id": self.reply_id, "start": 0, "text": self.shown})

    def unwatch_from(self, channel: str) -> None:
        self._watching_processes.discard(channel)

    def _frame(self) -> None:
        self._frame_timer = None
        if not self._unshown:
            return
        piece = "".join(self._unshown)
        self._unshown.clear()
        start = len(self.shown)
        self.shown += piece
        self._last_frame_at = asyncio.get_running_loop().time()
        if self.read_before is not None and not self._closed:
            self.read_before(self._last_frame_at + self._frame_interval)
        self._announce()
        if self._watching_processes:
            frame = {"type": REPLY_FRAME, "reply_id": self.reply_id, "start": start, "text": piece}
            self._send_soon(list(self._watching_processes), frame)

    def _send_soon(self, channels: list[str], message: dict) -> None:
        task = asyncio.create_task(self._send(channels, message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, channels: list[str], message: dict) -> None:
        for channel in channels:
            try:
                await self._board.layer.send(channel, message)
            except Exception as error:  # the watcher asks again, or reads the end from the database
                logger.warning("reply %s: %s to %s failed: %r", self.reply_id, message["type"], channel, error)


class RemoteReply(LiveText):
    """A reply generated in another process, as the watchers in this process see it."""

    remote = True

    def __init__(self, board: "Switchboard", reply_id: int):
        super().__init__()
        self.board = board
        self.reply_id = reply_id
        self.watchers = 0
        self.asked = False
        self.answered = False
        self._stitcher = Stitcher()
        self._length: int | None = None

    async def catch_up(self) -> None:
        """Ask the generator for the text so far, unless it answered and no frame went missing since."""
        if self.answered and not self._stitcher.has_gap:
            return
        self.asked = True
        await self._tell_generator(REPLY_WATCH)

    async def leave(self) -> None:
        """The last watcher in this process left: the generator can stop sending here."""
        if self.asked and not self.ended:
            await self._tell_generator(REPLY_UNWATCH)

    def frame(self, start: int, text: str) -> None:
        self.answered = True
        if self._stitcher.add(start, text):
            self._update()

    def end(self, length: int, status: str) -> None:
        self._length = length
        self.status = status
        self._update()

    def _update(self) -> None:
        self.shown = self._stitcher.text
        # An end that overtook frames waits for them.
        self.ended = self._length is not None and len(self.shown) >= self._length
        self._announce()

    async def _tell_generator(self, kind: str) -> None:
        message = {"type": kind, "reply_id": self.reply_id, "reply_to": self.board.channel}
        await self.board.layer.group_send(control_group(self.reply_id), message)


class Switchboard:
    """This process's one channel on the layer, and who in this process each message on it is for."""

    def __init__(self, layer: BaseChannelLayer):
        self.layer = layer
        self.channel = ""
        self.broadcasts: dict[int, ReplyBroadcast] = {}
        self.remote_replies: dict[int, RemoteReply] = {}
        self.pages: dict[int, set[ChatPage]] = {}
        self.ready: asyncio.Task | None = None
        self._receiving: asyncio.Task | None = None

    async def start(self) -> None:
        self.channel = await self.layer.new_channel("process.")
        self._receiving = asyncio.create_task(self._receive(), name=f"switchboard {self.channel}")

    @property
    def failed(self) -> bool:
        """It could not start (the layer was down), or stopped receiving: a new one takes over."""
        if not self.ready.done():
            return False
        return self.ready.cancelled() or self.ready.exception() is not None or self._receiving.done()

    def stop(self) -> None:
        if self._receiving is not None:
            self._receiving.cancel()  # which unsubscribes the channel

    async def _receive(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            try:
                self._dispatch(message)
            except Exception:
                logger.exception("switchboard: cannot handle %r", message)

    def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        if kind in (CHAT_RESET, CHAT_TITLE):
            for page in self.pages.get(message["conversation_id"], ()):
                page.hear(message)
        elif kind in (REPLY_FRAME, REPLY_END):
            remote = self.remote_replies.get(message["reply_id"])
            if remote is None:
                return  # its watchers left while it was on its way
            if kind == REPLY_FRAME:
                remote.frame(message["start"], message["text"])
            else:
                remote.end(message["length"], message.get("status", ""))  # a process of an older release sends none
        else:
            broadcast = self.broadcasts.get(message["reply_id"])
            if broadcast is None:
                return  # it ended in the meantime
            if kind == REPLY_STOP:
                broadcast.on_stop()
            elif kind == REPLY_WATCH:
                broadcast.watch_from(message["reply_to"])
            elif kind == REPLY_UNWATCH:
                broadcast.unwatch_from(message["reply_to"])


# One switchboard per event loop (a server has one; tests start a loop per test) and channel layer.
_boards: dict[asyncio.AbstractEventLoop, Switchboard] = {}


async def switchboard() -> Switchboard:
    """This process's switchboard, started on first use."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    board = _boards.get(loop)
    if board is None or board.layer is not layer or board.failed:
        if board is not None:
            board.stop()
        for closed in [other for other in _boards if other.is_closed()]:
            del _boards[closed]
        board = _boards[loop] = Switchboard(layer)
        board.ready = loop.create_task(board.start())
    # Shielded: a watcher that leaves while it starts must not cancel the start for everyone else.
    await asyncio.shield(board.ready)
    return board


def _local_broadcast(reply_id: int) -> ReplyBroadcast | None:
    board = _boards.get(asyncio.get_running_loop())
    return board.broadcasts.get(reply_id) if board is not None else None


def generated_here_for(reply_id: int, *, conversation_id: int, user_id: int) -> bool:
    """Whether the reply is being generated in this process, in this chat of this user.

    Then it is theirs to watch, and its watcher need not read it from the
    database first: one thread hop and one query fewer before the stream.
    """
    local = _local_broadcast(reply_id)
    return local is not None and (local.conversation_id, local.user_id) == (conversation_id, user_id)


@asynccontextmanager
async def reply_watch(reply_id: int) -> AsyncIterator[LiveText]:
    """A reply as one watcher reads it: in-process if it is generated here, else through the layer.

    Whatever ends the block (the end, a client that leaves, an error), nothing
    is left subscribed for this watcher.
    """
    local = _local_broadcast(reply_id)
    if local is not None:
        yield local
        return
    board = await switchboard()
    remote = board.remote_replies.get(reply_id)
    if remote is None:
        remote = board.remote_replies[reply_id] = RemoteReply(board, reply_id)
    remote.watchers += 1
    try:
        yield remote
    finally:
        remote.watchers -= 1
        if not remote.watchers:
            del board.remote_replies[reply_id]
            await remote.leave()


class ChatPage:
    """One open page of a chat, as its event stream waits for news: a reset by staff, or a new name."""

    def __init__(self) -> None:
        self.news = asyncio.Event()
        self.reset = False
        self.title: str | None = None

    def hear(self, message: dict) -> None:
        if message["type"] == CHAT_RESET:
            self.reset = True
        else:
            self.title = message["title"]
        self.news.set()


@asynccontextmanager
async def chat_watch(conversation_id: int) -> AsyncIterator[ChatPage]:
    """For an open page of a chat: the news of the chat as it comes. Left when the block ends."""
    board = await switchboard()
    page = ChatPage()
    pages = board.pages.get(conversation_id)
    try:
        if pages is None:
            pages = board.pages[conversation_id] = {page}
            await board.layer.group_add(chat_group(conversation_id), board.channel)
        else:
            pages.add(page)
        yield page
    finally:
        pages.discard(page)
        if not pages and board.pages.get(conversation_id) is pages:
            del board.pages[conversation_id]
            await board.layer.group_discard(chat_group(conversation_id), board.channel)


async def reply_stop_request(reply_id: int) -> None:
    """Stop a reply: in-process if it is generated here, else through the layer to whichever process has it."""
    local = _local_broadcast(reply_id)
    if local is not None:
        local.on_stop()
        return
    await get_channel_layer().group_send(control_group(reply_id), {"type": REPLY_STOP, "reply_id": reply_id})


async def chat_reset_announce(conversation_id: int) -> None:
    """Tell every open page of the chat, in any process, that staff reset it."""
    message = {"type": CHAT_RESET, "conversation_id": conversation_id}
    await get_channel_layer().group_send(chat_group(conversation_id), message)


async def chat_title_announce(conversation_id: int, title: str) -> None:
    """Tell every open page of the chat, in any process, its new name."""
    message = {"type": CHAT_TITLE, "conversation_id": conversation_id, "title": title}
    await get_channel_layer().group_send(chat_group(conversation_id), message)
