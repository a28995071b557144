"""Settling the calls of server processes that died, at the prices and estimates they left on their reservations.

A reply's reservation is settled with its reply (conversations' sweep marks the
reply interrupted in the same step); every other call of a dead process (a /v1
call, a summary) is settled here, billed its prompt's estimate: the prompt
reached the provider, and what came back is unknown.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.billing.budget import budget_settle
from accounts.models import Reservation, ServerProcess


def reservations_of_dead_processes(*, spare: str = ""):
    """Reservations whose process stopped beating (or never beat, long enough after making them).

    A server process sweeping on its timer spares itself (`spare`, its name):
    its calls are in flight as long as it runs, whatever its heartbeat says.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.STREAM_STALE_AFTER)
    alive = ServerProcess.objects.filter(seen_at__gte=cutoff).values("name")
    return Reservation.objects.exclude(owner__in=("", spare)).exclude(owner__in=alive).filter(created_at__lt=cutoff)


def reservation_settle(reservation: Reservation, *, prompt_tokens: int, completion_tokens: int):
    """Settle a call from its reservation alone, as estimated usage at the prices it started with."""
    return budget_settle(
        reservation_id=reservation.pk,
        user_id=reservation.user_id,
        model=reservation.model,
        kind=reservation.kind,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        estimated=True,
        api_key=reservation.api_key,
        prices=reservation.prices(),
        call_id=reservation.call_id,
    )


def orphan_calls_settle(*, spare: str = "") -> int:
    """Settle the calls of dead processes that belong to no reply (returns how many); drop expired reservations."""
    orphans = (
        reservations_of_dead_processes(spare=spare).filter(message__isnull=True).select_related("model", "api_key")
    )
    settled = 0
    for reservation in orphans:
        with transaction.atomic():
            if not Reservation.objects.select_for_update(skip_locked=True).filter(pk=reservation.pk).exists():
                continue  # settled meanwhile, or another sweep has it
            reservation_settle(reservation, prompt_tokens=reservation.prompt_estimate, completion_tokens=0)
            settled += 1
    ServerProcess.objects.filter(seen_at__lt=timezone.now() - timedelta(seconds=settings.STREAM_STALE_AFTER)).exclude(
        name=spare
    ).delete()
    # Past RESERVATION_TTL a reservation holds nothing (see ledger_sql.FIGURES), so it goes: a call of a
    # live process that still runs bills its usage all the same when it ends, with nothing left to drop.
    Reservation.objects.filter(expires_at__lte=timezone.now()).delete()
    return settled
