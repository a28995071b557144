"""The statements every metered call runs on the ledger, written out in SQL that PostgreSQL and SQLite both take.

Each ORM query costs about 0.3 ms more CPU to build than the statement it
sends, and a call reserves and settles through these on every request of
the site, so they are written once here instead. What is held and what is
spent are read in one statement: a call settled meanwhile is seen either
still held or already spent, never as neither.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache

from django.conf import settings
from django.db import connection, transaction

from accounts.billing.prices import MONEY_PLACES
from accounts.models import DailyUsage, Limits, Reservation, UsageRecord, User, hour_start, local_today, month_start
from accounts.rows import first_row, insert_statement, insert_values, inserted, one_round_trip, row_insert, rows_queued


def _money(value) -> Decimal:
    # PostgreSQL sums numeric exactly; SQLite keeps decimals as floats and sums those.
    return value if isinstance(value, Decimal) else Decimal(str(value)).quantize(MONEY_PLACES)


@dataclass(frozen=True)
class LedgerFigures:
    """One user's money at one moment: held by calls in flight, and spent in the windows the limits count."""

    tokens_held: int
    usd_held: Decimal
    tokens_today: int
    usd_this_month: Decimal
    tokens_this_hour: int  # 0 for a user without an hourly limit: only that limit needs it, and it reads the ledger


@cache
def _figures_statement() -> str:
    user = User._meta
    hourly = user.get_field("tokens_per_hour").column
    return f"""
SELECT held.tokens, held.cost, spent.tokens, spent.cost, this_hour.tokens
FROM
    (SELECT COALESCE(SUM(tokens), 0) AS tokens, COALESCE(SUM(cost), 0) AS cost
     FROM {Reservation._meta.db_table}
     WHERE user_id = %(user)s AND expires_at > %(now)s) AS held,
    (SELECT COALESCE(SUM(CASE WHEN day = %(today)s THEN tokens ELSE 0 END), 0) AS tokens,
            COALESCE(SUM(cost), 0) AS cost
     FROM {DailyUsage._meta.db_table}
     WHERE user_id = %(user)s AND day >= %(month)s AND day <= %(today)s) AS spent,
    (SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS tokens
     FROM {UsageRecord._meta.db_table}
     WHERE (%(hourly_default)s OR EXISTS (SELECT 1 FROM {user.db_table} WHERE id = %(user)s AND {hourly} IS NOT NULL))
        AND user_id = %(user)s AND day = %(today)s AND created_at >= %(hour)s) AS this_hour
"""


def _figures(user_id: int, now: datetime) -> tuple[str, dict]:
    today = local_today(now)
    ops = connection.ops
    params = {
        "user": user_id,
        "now": ops.adapt_datetimefield_value(now),
        "today": ops.adapt_datefield_value(today),
        "month": ops.adapt_datefield_value(month_start(today)),
        "hour": ops.adapt_datetimefield_value(hour_start(now)),
        # The user's hourly limit is their own or, without one, the site's (User.limits).
        "hourly_default": settings.QUOTA_TOKENS_PER_HOUR is not None,
    }
    return _figures_statement(), params


def _figures_from(row: tuple) -> LedgerFigures:
    held_tokens, held_cost, tokens_today, cost_month, tokens_hour = row
    return LedgerFigures(int(held_tokens), _money(held_cost), int(tokens_today), _money(cost_month), int(tokens_hour))


def ledger_figures(user_id: int, now: datetime) -> LedgerFigures:
    """What the user's reservations hold (those not expired), their tokens today and dollars this month
    (the daily rollup), and if they have an hourly limit their tokens this clock hour (the ledger: the rollup
    is per day)."""
    return _figures_from(first_row(*_figures(user_id, now)))


@dataclass(frozen=True)
class LockedBudget:
    """A user's limits, their row locked until the transaction ends, and their ledger figures at `now`, read
    once the lock was held."""

    now: datetime
    limits: Limits
    figures: LedgerFigures


def limits_locked_with_figures(user_id: int, now: datetime) -> LockedBudget:
    """The user's limits, their row locked until the transaction ends (one caller's reservations go one at a
    time), and then their ledger_figures(), read once the lock is held: in one round trip on PostgreSQL (with
    the transaction's BEGIN, in one_trip_transaction)."""
    with one_round_trip():
        answer = limits_locked_with_figures_queued(user_id, now)
    return answer()


def limits_locked_with_figures_queued(user_id: int, now: datetime) -> Callable[[], LockedBudget]:
    """limits_locked_with_figures, answered when called for: inside one_round_trip, its two statements go with
    the others of the block. Each runs as a statement of its own, so the figures see every call committed
    before the lock was granted."""
    fields = [User._meta.get_field(name) for name in User.LIMIT_FIELDS]
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""  # SQLite locks the whole database
    columns = ", ".join(field.column for field in fields)
    limits = rows_queued(f"SELECT {columns} FROM {User._meta.db_table} WHERE id = %s{lock}", [user_id])
    figures = rows_queued(*_figures(user_id, now))

    def answer() -> LockedBudget:
        limits_rows, [figures_row] = limits(), figures()
        if not limits_rows:
            raise User.DoesNotExist(f"No user {user_id}.")
        own = {field.attname: field.to_python(value) for field, value in zip(fields, limits_rows[0], strict=True)}
        return LockedBudget(now, User(pk=user_id, **own).limits(), _figures_from(figures_row))

    return answer


def reservation_drop(reservation_id: int) -> None:
    first_row(f"DELETE FROM {Reservation._meta.db_table} WHERE id = %s", [reservation_id])


def _rollup_add(source: str) -> str:
    """Count one settled call in the daily rollup, in its row for the user, model and day (made by the first);
    `source` gives the row's values (user, model, day, tokens, cost)."""
    return f"""
INSERT INTO {DailyUsage._meta.db_table} AS rollup (user_id, model_id, day, calls, tokens, cost)
{source}
ON CONFLICT (user_id, model_id, day) DO UPDATE SET
    calls = rollup.calls + 1, tokens = rollup.tokens + excluded.tokens, cost = rollup.cost + excluded.cost
"""


def _rollup_values(record: UsageRecord) -> list:
    cost = DailyUsage._meta.get_field("cost").get_db_prep_save(record.cost, connection)
    tokens = record.prompt_tokens + record.completion_tokens
    return [record.user_id, record.model_id, connection.ops.adapt_datefield_value(record.day), tokens, cost]


@cache
def _settle_statement() -> str:
    """PostgreSQL's one statement for ledger_settle: its parts see one snapshot, and the rollup counts the row
    only if the ledger took it."""
    record, _ = insert_statement(UsageRecord, "call_id")
    rollup = _rollup_add("SELECT %s, %s, %s, 1, %s, %s FROM record")  # nothing when the ledger took no row
    return (
        f"WITH dropped AS (DELETE FROM {Reservation._meta.db_table} WHERE id = %s), "
        f"record AS ({record}), rollup AS ({rollup}) SELECT * FROM record"
    )


def ledger_settle(reservation_id: int | None, record: UsageRecord) -> bool:
    """Replace a call's reservation (if any) by its ledger row, counted in the daily rollup, as one change.

    The ledger takes one row per call id: a call on it already (settled by
    the sweep meanwhile) is neither written nor counted again, and the answer
    is False. On PostgreSQL this is one statement, so one round trip with no
    transaction of its own to begin and commit; SQLite takes three.
    """
    _, fields = insert_statement(UsageRecord, "call_id")
    if connection.vendor == "postgresql":
        params = [reservation_id, *insert_values(record, fields), *_rollup_values(record)]
        return inserted(record, first_row(_settle_statement(), params))
    with transaction.atomic(savepoint=False):
        if reservation_id is not None:
            reservation_drop(reservation_id)
        if not row_insert(record, unique="call_id"):
            return False
        first_row(_rollup_add("VALUES (%s, %s, %s, 1, %s, %s)"), _rollup_values(record))
    return True
