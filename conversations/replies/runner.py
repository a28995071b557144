"""The reply runner: the one owner of the replies generated in this process.

A browser reply belongs to no HTTP request: closing the tab neither stops nor
loses it. The runner of the process that took the message reads the upstream
for it, hands its text to the fan-out, saves it about once a second (one
database step for all its replies), and stores its outcome in the same
transaction as its metered call is settled. On shutdown it stops every reply,
saves it as interrupted and settles it before the process exits. On a timer it
says the process is alive and sweeps up after processes that died.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import sys
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError

from accounts.billing.metered import MeteredCall, in_flight, reserve_step, settle_unsettled, unsettled
from accounts.billing.processes import PROCESS_NAME, process_heartbeat, process_leave
from conversations.db import db_step
from conversations.llm import ReplyStream, UpstreamError, complete, on_request_sent, reply_stream_open
from conversations.models import Message
from conversations.replies.fanout import ReplyBroadcast
from conversations.services.context import ReplyPlan, summary_call, summary_record
from conversations.services.replies import (
    INTERRUPTED_TEXT,
    ReplyOutcome,
    dead_processes_sweep,
    replies_flush,
    reply_record,
)
from conversations.services.titles import title_generate, title_wanted
from conversations.upstream import upstream_offer, upstream_watch, usage_counted_by_server

logger = logging.getLogger(__name__)

# How often a streaming reply touches its row when no text arrives, so that
# the sweep can tell a slow upstream from a dead process.
HEARTBEAT_INTERVAL = 5.0
# Requests that start a reply served at once by a process; the others wait their turn (in_turn).
STARTS_AT_ONCE = 4
FANOUT_DOWN_TEXT = (
    "The site cannot reach its message service (Redis) right now, so nothing was sent. Try again shortly."
)
INTERNAL_ERROR_TEXT = "Something broke on our side while writing this reply. The text so far is kept."


def _done(future: asyncio.Future | None) -> None:
    """Resolve a future of ReplyGeneration's that may have been resolved, or let go of, already."""
    if future is not None and not future.done():
        future.set_result(None)


class ReplyGeneration:
    """One reply being generated: its upstream stream, its broadcast, its metered call."""

    def __init__(self, plan: ReplyPlan):
        self.plan = plan
        self.call: MeteredCall = plan.call
        self.broadcast = ReplyBroadcast(
            plan.reply_id,
            conversation_id=plan.conversation_id,
            user_id=plan.user_id,
            on_stop=self.stop,
            prefix=plan.prefix,
        )
        self.task: asyncio.Task | None = None
        # Done once the broadcast can be found, by Stop and by watchers, here and in other processes (see
        # ready_wait). A future, not an asyncio.Event: about 600 bytes less for every reply in flight.
        self.ready = asyncio.get_running_loop().create_future()
        # Done once the reply's request is with the provider, or will not be sent (see request_out_wait); None then.
        self._request_out: asyncio.Future | None = asyncio.get_running_loop().create_future()
        self.relay_task: asyncio.Task | None = None
        self.stop_reason: str | None = None  # "stop" (Stop, or the chat went) or "shutdown"
        self.title_task: asyncio.Task | None = None  # naming the chat, after its first reply
        # Until the relay says otherwise, whatever ends the reply is our own failure.
        self.outcome = ReplyOutcome(status=Message.Status.ERROR, error_code="internal", error_text=INTERNAL_ERROR_TEXT)
        self.saved_length = 0
        self.saved_at = time.monotonic()
        self.sent_messages: list[dict] | None = None
        self.reported_model = ""
        self.stored_status = ""  # the outcome's status once _record wrote it (committed if the call settled)

    async def ready_wait(self) -> None:
        """Until watchers can find the reply. Shielded: a request cancelled meanwhile leaves `ready` to others."""
        await asyncio.shield(self.ready)

    async def request_out_wait(self) -> None:
        """Until the reply's request has reached the provider, or will not be sent (refused, stopped, ended), or
        waits for a summary's call first. Shielded, as ready_wait.

        What a request renders for its browser in the meantime costs it no time:
        the provider takes longer to think than a page's fragment to render.
        """
        if self._request_out is not None:
            await asyncio.shield(self._request_out)

    def _request_is_out(self) -> None:
        out, self._request_out = self._request_out, None
        _done(out)

    def _when_sent(self) -> Callable[[], None]:
        """What the upstream client calls once the request is out. Not a method of the generation: the request
        keeps it, and the generation (through its stream) the request, a cycle left for the collector's full pass."""
        call, out = self.call, self._request_out

        def sent() -> None:
            call.sent()
            _done(out)

        return sent

    def stop(self, reason: str = "stop") -> None:
        """End the reply early; closing the upstream stream stops the tokens (and the bill) at once."""
        self.stop_reason = self.stop_reason or reason
        if self.relay_task is not None:
            self.relay_task.cancel()
        if reason == "shutdown" and self.title_task is not None:
            self.title_task.cancel()  # settled as it ends; the chat keeps its first name

    async def run(self) -> None:
        """Generate the reply; whatever happens, its call is settled and its outcome stored with it."""
        self.call.on_settle = self._record
        try:
            async with self.call:
                try:
                    await self.broadcast.open()
                except Exception as error:
                    logger.warning("reply %s cannot be broadcast: %r", self.plan.reply_id, error)
                    self.outcome = ReplyOutcome(
                        status=Message.Status.ERROR, error_code="fanout_unavailable", error_text=FANOUT_DOWN_TEXT
                    )
                    return
                finally:
                    self.ready.set_result(None)
                if self.stop_reason is None:
                    self.relay_task = asyncio.create_task(self._relay())
                    self.outcome = await self.relay_task
                    await self._usage_from_server()
                else:
                    self.outcome = self._ended()
        except Exception:
            logger.exception("reply %s failed unexpectedly", self.plan.reply_id)
        finally:
            self._request_is_out()  # or never will be
            try:
                await self.broadcast.close(status=self.stored_status if self.call.settled else "")
            except Exception as error:  # watchers fall back to the stored reply
                logger.warning("reply %s: its end could not be broadcast: %r", self.plan.reply_id, error)
        if self.outcome.status == Message.Status.COMPLETE and title_wanted(self.plan):
            # After the reply's end is out: nobody waits on the name.
            self.title_task = asyncio.create_task(title_generate(plan=self.plan, reply_text=self.broadcast.text()))
            await asyncio.gather(self.title_task, return_exceptions=True)

    def _record(self, charge) -> None:
        """Store the outcome with the call's charge (called inside the settling transaction)."""
        self.outcome.text = self.broadcast.text()
        self.outcome.finish_reason = self.call.finish_reason
        self.outcome.reported_model = self.reported_model
        self.outcome.time_to_first_token = self.call.time_to_first_token
        self.outcome.duration = self.call.duration
        kept = reply_record(
            reply_id=self.plan.reply_id, conversation_id=self.plan.conversation_id, outcome=self.outcome, charge=charge
        )
        if kept:
            self.stored_status = self.outcome.status
        else:  # deleted or reset meanwhile: the call is billed all the same, pointing to no reply
            self.call.message_id = None

    def _ended(self, status: str = "", **details) -> ReplyOutcome:
        if self.stop_reason == "shutdown":
            status, details = Message.Status.INTERRUPTED, {"error_code": "interrupted", "error_text": INTERRUPTED_TEXT}
        return ReplyOutcome(status=status or Message.Status.STOPPED, **details)

    async def _relay(self) -> ReplyOutcome:
        stream: ReplyStream | None = None
        try:
            await self._check_served()
            if self.plan.to_summarise:
                self._request_is_out()  # as good as: a summary's call first may take seconds
                await self._summarise()
            # Sent once the provider has the whole request: a Stop before that costs nothing.
            on_request_sent.set(self._when_sent())
            try:
                stream = await self._open(self.plan.messages)
            except UpstreamError as error:
                if error.code != "context_length_exceeded":
                    raise
                # Our count of the prompt's tokens was too low for this model: try once with fewer turns.
                stream = await self._open(self.plan.trimmed_harder())
            publish = self.broadcast.publish
            self.broadcast.read_before = stream.read_before
            async for delta in stream.deltas():
                if self.call.first_token_at is None:
                    self.call.first_token()
                publish(delta)
            return ReplyOutcome(status=Message.Status.COMPLETE)
        except UpstreamError as error:
            if stream is None:  # refused, or never answered: the provider bills nothing
                self.call.refused()
            return ReplyOutcome(status=Message.Status.ERROR, error_code=error.code, error_text=error.user_message)
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise
            return self._ended()
        finally:
            if stream is not None:
                await stream.close()
                self.call.usage = stream.usage
                self.call.finish_reason = stream.finish_reason or ""
                self.reported_model = stream.reported_model
            self.call.completion_text = self.broadcast.text()[len(self.plan.prefix) :]  # this call's text only

    async def _check_served(self) -> None:
        """Refuse a model the upstream does not list: another model would answer, labelled and priced as this one."""
        offer = await upstream_offer()
        model = self.plan.model
        if offer is not None and model.model_id not in offer.model_ids:
            raise UpstreamError(
                "model_not_served",
                f"The model provider does not serve {model.display_name} ({model.model_id}) at the moment, "
                "so nothing was sent. Pick another model.",
            )

    async def _usage_from_server(self) -> None:
        """Where the upstream streamed no usage, ask it to count the tokens (llama-cpp-python's server can)."""
        if self.call.usage is None and self.call.reached_upstream and self.sent_messages is not None:
            self.call.usage = await usage_counted_by_server(
                model_id=self.plan.model.model_id,
                messages=self.sent_messages,
                completion_text=self.call.completion_text,
            )

    async def _open(self, messages: list[dict]) -> ReplyStream:
        self.sent_messages = messages
        model = self.plan.model
        return await reply_stream_open(
            model_id=model.model_id,
            messages=messages,
            max_tokens=self.call.max_tokens,
            token_limit_param=model.token_limit_param,
        )

    async def _summarise(self) -> None:
        """Replace the turns that no longer fit by a summary, made by a cheap call billed to the user.

        When the user's budget has no room for it, or the call fails, the old
        turns are simply left out: the reply matters more than the summary.
        """
        plan = self.plan
        call = await reserve_step(summary_call, plan=plan)
        if call is None:
            return
        summary = ""
        call.on_settle = lambda charge: summary and summary_record(plan=plan, text=summary)
        on_request_sent.set(call.sent)
        async with call:
            try:
                text, call.usage = await complete(
                    model_id=call.model.model_id,
                    messages=call.prompt,
                    max_tokens=call.max_tokens,
                    token_limit_param=call.model.token_limit_param,
                )
            except UpstreamError as error:
                logger.info("summary for reply %s failed: %s", plan.reply_id, error.code)
                call.refused()
                return
            call.completion_text = text
            summary = text.strip()
        if summary:
            plan.messages = plan.with_summary(summary)


class ReplyRunner:
    """The generations of one process (one event loop), and its timer."""

    def __init__(self):
        self.generations: dict[int, ReplyGeneration] = {}
        self.timer: asyncio.Task | None = None
        self.upstream_watch: asyncio.Task | None = None
        self.shutting_down = False
        # A server process sweeps on its timer even when idle; elsewhere (tests, commands)
        # the timer runs only while there is work.
        self.serving = False
        self.starting = asyncio.Semaphore(STARTS_AT_ONCE)  # first come, first served

    def start(self, plan: ReplyPlan) -> ReplyGeneration:
        """Start generating a reserved reply. Synchronous: nothing can cancel it between the reservation and here.

        Await the generation's ready_wait() before telling the browser where to watch it.
        """
        generation = ReplyGeneration(plan)
        self.generations[plan.reply_id] = generation
        # A fresh context: the task outlives the request, whose context names the thread its sync parts run
        # on (chatsite.asgi); asgiref refuses sync calls made in that context once the request has ended.
        generation.task = asyncio.create_task(
            generation.run(), name=f"reply-{plan.reply_id}", context=contextvars.Context()
        )
        generation.task.add_done_callback(lambda _: self.generations.pop(plan.reply_id, None))
        if self.shutting_down:
            generation.stop("shutdown")
        self.timer_ensure()
        return generation

    def timer_ensure(self) -> None:
        if self.timer is None or self.timer.done():
            self.timer = asyncio.create_task(
                self._tick_while_busy(), name="reply-runner", context=contextvars.Context()
            )

    def serve(self) -> None:
        """This is a server process: keep the timer, and so the sweep, going for good (unless SWEEP_INTERVAL is 0),
        and its view of the upstream's model list fresh."""
        self.serving = settings.SWEEP_INTERVAL > 0
        self.timer_ensure()
        if self.upstream_watch is None:
            self.upstream_watch = asyncio.create_task(
                upstream_watch(), name="upstream-watch", context=contextvars.Context()
            )

    def busy(self) -> bool:
        """Whether this process has replies or calls in flight, or calls still to settle."""
        return bool(self.generations or in_flight or unsettled)

    async def _tick_while_busy(self) -> None:
        """Save texts, say the process is alive, sweep, settle what could not be settled.

        An idle process owns nothing, so it need not beat; unless it is a
        server process (serve()), its timer stops and starts again with the
        next reply or call.
        """
        last_beat = last_sweep = float("-inf")
        while True:
            await asyncio.sleep(settings.STREAM_FLUSH_INTERVAL)
            busy = self.busy()
            if not busy and not self.serving:
                return
            try:
                await self._save_texts()
                now = time.monotonic()
                if busy and now - last_beat >= settings.STREAM_STALE_AFTER / 3:
                    await db_step(process_heartbeat)
                    last_beat = now
                if now - last_sweep >= (settings.SWEEP_INTERVAL or settings.STREAM_STALE_AFTER / 2):
                    await db_step(dead_processes_sweep, spare=PROCESS_NAME)
                    last_sweep = now
                await settle_unsettled()
            except DatabaseError as error:
                logger.warning("reply runner cannot reach the database: %s", error)

    async def _save_texts(self) -> None:
        """Save the text of every reply that grew (or whose heartbeat is due), in one step."""
        now = time.monotonic()
        # Often enough that the sweep never takes a live reply with a silent upstream for a dead one.
        heartbeat = min(HEARTBEAT_INTERVAL, settings.STREAM_STALE_AFTER / 3)
        due = {}
        for reply_id, generation in self.generations.items():
            length = len(generation.broadcast.text())
            if length != generation.saved_length or now - generation.saved_at >= heartbeat:
                due[reply_id] = generation
        if not due:
            return
        gone = await db_step(replies_flush, texts={reply_id: g.broadcast.text() for reply_id, g in due.items()})
        for reply_id, generation in due.items():
            generation.saved_length, generation.saved_at = len(generation.broadcast.text()), now
            if reply_id in gone:
                # The chat was deleted or reset under us: stop paying for tokens nobody will read.
                generation.stop()

    async def shutdown(self) -> None:
        """Stop every reply, saving each as interrupted and settling its call, then leave.

        The server still takes requests until this ends: a reply started
        meanwhile is stopped at once (see start), and waited for here too.
        """
        self.shutting_down = True
        stopped = 0
        while running := [generation for generation in self.generations.values() if not generation.task.done()]:
            for generation in running:
                generation.stop("shutdown")
            await asyncio.gather(*(generation.task for generation in running), return_exceptions=True)
            stopped += len(running)
        for task in (self.timer, self.upstream_watch):
            if task is not None:
                task.cancel()
        try:
            await settle_unsettled()
            await db_step(process_leave)
        except DatabaseError as error:
            logger.warning("reply runner cannot reach the database to leave (the sweep of another will): %s", error)
        logger.info("reply runner stopped %d replies for shutdown", stopped)


_runners: dict[asyncio.AbstractEventLoop, ReplyRunner] = {}


def reply_runner() -> ReplyRunner:
    """The runner of the running event loop (a server process has one; each test its own)."""
    loop = asyncio.get_running_loop()
    runner = _runners.get(loop)
    if runner is None:
        for closed in [other for other in _runners if other.is_closed()]:
            del _runners[closed]
        runner = _runners[loop] = ReplyRunner()
        _shutdown_with_daphne(runner)
    return runner


def in_turn(view):
    """For an async view that starts a reply: served STARTS_AT_ONCE at a time, in the order they came.

    Such a request is mostly CPU (its database step, rendering, the reply's
    start). Served all at once, a burst of them shares the process and each
    is answered about when the last is (200 sends at once: 6.1 s p50), while
    the replies of the first have long started: their browsers attach to a
    reply half over. In turn, the first are answered at once and watch from
    the start; the rest wait less, on average, and a reply starts only once
    its browser is about to be told where to watch it. A turn free at once
    is taken without awaiting: no point where a disconnect could cut it.
    """

    @functools.wraps(view)
    async def served_in_turn(request, *args, **kwargs):
        async with reply_runner().starting:
            return await view(request, *args, **kwargs)

    return served_in_turn


def runner_of_this_loop() -> ReplyRunner | None:
    """The running event loop's runner, if it has one yet."""
    return _runners.get(asyncio.get_running_loop())


def _shutdown_with_daphne(runner: ReplyRunner) -> None:
    """Under daphne, SIGTERM stops Twisted's reactor: have it wait for the runner to shut down first.

    Twisted runs the "before shutdown" triggers in turn (daphne's own, which
    cancels the requests in flight, comes first: see chatsite/asgi.py for how
    that reaches the views), then waits for the Deferreds they return before
    it stops listening and stops the event loop this runner lives on.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(runner.shutdown()))
    )
