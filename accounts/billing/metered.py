"""One upstream call, metered: reserve before, record while it runs, settle exactly once after.

Every upstream call (a chat reply, a summary, a /v1 call) is one MeteredCall:

    call = MeteredCall(user=user, model=model, kind=UsageRecord.Kind.API, prompt=messages, max_tokens=n)
    await call.areserve()                 # QuotaExceeded: nothing was held
    async with call:                      # settles on every exit, cancellation included
        call.sent()                       # the request left: from now on it may cost money
        ...                               # call.first_token(), call.usage = ..., call.completion_text = ...

The call keeps the prices in force when it starts, so a later price change or a
late sweep never reprices it, and a call that never reached the upstream
records nothing. Settling is idempotent, in this process (a flag) and across
processes (the ledger takes one row per call id), so the call and the sweep of
a process that died can never both bill it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from django.db import DatabaseError, transaction

from accounts.billing.budget import budget_reserve, budget_settle
from accounts.billing.processes import PROCESS_NAME
from accounts.billing.prompt_bound import estimate_tokens, prompt_tokens_bound, prompt_tokens_estimate
from accounts.models import User
from conversations.db import db_step, db_step_to_end

if TYPE_CHECKING:
    from accounts.billing.ledger_sql import LockedBudget
    from accounts.models import ApiKey
    from conversations.models import ChatModel, Message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, as the upstream reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class Charge:
    """What a call is billed: the upstream's figures, or an estimate flagged as such, and their cost."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    estimated: bool
    cost: Decimal


class MeteredCall:
    """One upstream call: its reservation, prices, timing, usage and outcome, and its settlement (see above)."""

    def __init__(
        self,
        *,
        user: User,
        model: ChatModel,
        kind: str,
        prompt: list[dict],
        max_tokens: int,
        prompt_extra: object = None,
        prompt_extra_tokens: int = 0,
        api_key: ApiKey | None = None,
        message: Message | None = None,
        text_before: int = 0,
    ):
        self.call_id = uuid.uuid4()
        # Ids, not the instances: a reply's message holds its question, chat and user, kept as long as the call.
        self.user_id = user.pk
        self.model = model
        self.prices = model.prices()
        self.kind = kind
        # prompt_extra: what is sent besides the messages (tools, a response format...);
        # prompt_extra_tokens: text still to come that will join the prompt (a summary).
        images = model.image_token_rule()
        self.prompt_bound = prompt_tokens_bound(prompt, extra=prompt_extra, images=images) + prompt_extra_tokens
        self.prompt = prompt
        self.prompt_estimate = prompt_tokens_estimate(prompt, images=images)
        self.max_tokens = max_tokens
        self.api_key = api_key
        self.message_id = message.pk if message is not None else None
        # Characters of the message's text that earlier calls wrote: a continued reply's, not this call's to bill.
        self.text_before = text_before
        self.reservation_id: int | None = None
        # Filled in while the call runs.
        self.reached_upstream = False
        self.usage: Usage | None = None
        self.completion_text = ""
        # Where the caller relays text without reading it: tokens it counted some other way.
        self.completion_estimate: int | None = None
        self.finish_reason = ""
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        # Run inside the settling transaction, with the charge: a reply stores its outcome there.
        self.on_settle: Callable[[Charge], None] | None = None
        self.settled = False

    # -- reserve ---------------------------------------------------------------------------

    def reserve(self, *, locked: LockedBudget | None = None) -> None:
        """Hold the call's worst case; QuotaExceeded when it does not fit. max_tokens may shrink to what fits.

        `locked`: the user's budget as the caller's transaction read it already (see budget_reserve).
        """
        grant = budget_reserve(
            user_id=self.user_id,
            model=self.model,
            prompt_tokens=self.prompt_bound,
            max_tokens=self.max_tokens,
            message_id=self.message_id,
            prices=self.prices,
            kind=self.kind,
            api_key=self.api_key,
            call_id=self.call_id,
            owner=PROCESS_NAME,
            prompt_estimate=self.prompt_estimate,
            text_before=self.text_before,
            locked=locked,
        )
        self.reservation_id, self.max_tokens = grant.reservation_id, grant.max_tokens
        in_flight.add(self)

    def _reserved(self) -> MeteredCall:
        self.reserve()
        return self

    async def areserve(self) -> None:
        """reserve() from async code; see reserve_step."""
        await reserve_step(self._reserved)

    # -- while it runs ---------------------------------------------------------------------

    def sent(self) -> None:
        """The request is on its way: from now on the provider may bill it."""
        self.reached_upstream = True

    def refused(self) -> None:
        """The provider refused the request, or could not be reached: it bills nothing, nor do we."""
        self.reached_upstream = False

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    @property
    def time_to_first_token(self) -> timedelta | None:
        return None if self.first_token_at is None else timedelta(seconds=self.first_token_at - self.started)

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=time.monotonic() - self.started)

    # -- settle ----------------------------------------------------------------------------

    def charge(self) -> Charge:
        """The upstream's own figures when it sent them; else counted from the text and flagged; else nothing."""
        if self.usage is not None:
            prompt, completion, cached, estimated = (
                self.usage.prompt_tokens,
                self.usage.completion_tokens,
                self.usage.cached_tokens,
                False,
            )
        elif self.reached_upstream:
            completion = self.completion_estimate
            if completion is None:
                completion = estimate_tokens(self.completion_text)
            prompt, cached, estimated = self.prompt_estimate, 0, True
        else:
            prompt, completion, cached, estimated = 0, 0, 0, False
        cost = self.prices.cost(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached)
        return Charge(prompt, completion, cached, estimated, cost)

    def settle(self) -> Charge | None:
        """Replace the reservation by the charge, with `on_settle`'s writes, in one transaction. Once only."""
        if self.settled:
            return None
        charge = self.charge()
        # budget_settle is one change by itself: a transaction around it is needed only for on_settle's writes
        # (two round trips, BEGIN and COMMIT, spared for every /v1 call).
        with transaction.atomic() if self.on_settle is not None else contextlib.nullcontext():
            if self.on_settle is not None:
                self.on_settle(charge)
            budget_settle(
                reservation_id=self.reservation_id,
                user_id=self.user_id,
                model=self.model,
                kind=self.kind,
                prompt_tokens=charge.prompt_tokens,
                completion_tokens=charge.completion_tokens,
                cached_tokens=charge.cached_tokens,
                estimated=charge.estimated,
                message_id=self.message_id,
                api_key=self.api_key,
                prices=self.prices,
                call_id=self.call_id,
            )
        self.settled = True
        # A reply's hook is its own bound method: kept, the call and the reply would hold each other (and all
        # they hold: the upstream stream and its buffers) until the collector's rare full pass.
        self.on_settle = None
        in_flight.discard(self)
        return charge

    async def asettle(self) -> None:
        """settle() from async code: it runs to its end even if the caller is cancelled meanwhile.

        When the database cannot be reached, the call waits in `unsettled`,
        which the process's reply runner settles as soon as it can, so its
        reservation is not held for nothing.
        """
        if self.settled:
            return
        try:
            await db_step_to_end(self.settle)
        except DatabaseError:
            logger.warning("call %s could not be settled yet: the database is unreachable", self.call_id)
            unsettled.add(self)

    async def __aenter__(self) -> MeteredCall:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.asettle()


# This process's calls between reserve and settle: while there are any, the
# process must keep saying it is alive (see accounts/billing/processes.py).
in_flight: set[MeteredCall] = set()
# Calls that could not be settled because the database was down.
unsettled: set[MeteredCall] = set()


async def settle_unsettled() -> None:
    """Settle the calls that could not be settled earlier (DatabaseError if it still cannot)."""
    for call in list(unsettled):
        await db_step(call.settle)
        unsettled.discard(call)


async def reserve_step(function: Callable[..., MeteredCall | None], *args, **kwargs) -> MeteredCall | None:
    """Run a database step that reserves a call and returns it.

    If the caller is cancelled meanwhile (a client that went away), the step
    still runs to its end, and the call it reserved is settled (its
    reservation released, nothing billed) before the cancel goes on.
    """
    return await db_step_to_end(function, *args, on_cancel=_release, **kwargs)


async def _release(call: MeteredCall | None) -> None:
    if call is not None:
        await call.asettle()
