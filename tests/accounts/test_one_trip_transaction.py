"""A reservation's transaction sent in two round trips (accounts/rows.py: one_trip_transaction).

It is PostgreSQL's BEGIN and COMMIT written by hand, so what Django's atomic()
would guarantee is checked here: all or nothing, the user's lock let go on
every exit, and the pooled connection left ready for the next step.
"""

import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from psycopg import pq

from accounts.billing.budget import budget_reserve
from accounts.billing.ledger_sql import limits_locked_with_figures, limits_locked_with_figures_queued
from accounts.models import Reservation, User
from accounts.rows import (
    insert_statement,
    insert_values,
    one_round_trip,
    one_trip_transaction,
    row_insert,
    row_insert_queued,
    rows_queued,
)
from conversations.models import ChatModel

pytestmark = pytest.mark.django_db(transaction=True)


def left_clean() -> bool:
    """The connection is out of any transaction and out of pipeline mode, and answers a query."""
    pg = connection.connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        answered = cursor.fetchone() == (1,)
    return (
        answered
        and pg.info.transaction_status == pq.TransactionStatus.IDLE
        and pg.pgconn.pipeline_status == pq.PipelineStatus.OFF
    )


def lockable_by_another_connection(user_id: int) -> bool:
    """Whether a second connection can lock the user's row without waiting (nobody holds it)."""
    answer = []

    def other() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute("SET LOCAL lock_timeout = '2s'")
                cursor.execute(f"SELECT id FROM {User._meta.db_table} WHERE id = %s FOR UPDATE", [user_id])
                answer.append(cursor.fetchone() is not None)
                cursor.execute("ROLLBACK")
        except Exception:
            answer.append(False)
        finally:
            connection.close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    return answer == [True]


def a_reservation(user_id: int, model: ChatModel) -> Reservation:
    now = timezone.now()
    return Reservation(
        user_id=user_id,
        kind="api",
        model=model,
        prompt_tokens=10,
        prompt_estimate=10,
        tokens=100,
        cost=0,
        input_price=0,
        output_price=0,
        day=now.date(),
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )


@pytest.fixture
def mini(catalog) -> ChatModel:
    return ChatModel.objects.get(model_id="gpt-4o-mini")


def test_a_reservation_on_its_own_is_committed_with_its_id(alice, mini):
    grant = budget_reserve(user_id=alice.pk, model=mini, prompt_tokens=100, max_tokens=500)

    stored = Reservation.objects.get(pk=grant.reservation_id)
    assert (stored.user_id, stored.tokens) == (alice.pk, 600)
    assert left_clean()
    assert lockable_by_another_connection(alice.pk)


def our_code_fails(user_id: int, model: ChatModel) -> None:
    raise RuntimeError("our own code failed after the lock")


def the_database_refuses_at_commit(user_id: int, model: ChatModel) -> None:
    # Django's foreign keys are checked at COMMIT on PostgreSQL: the refusal comes with the last round trip.
    row_insert_queued(a_reservation(user_id + 1000, model))


@pytest.mark.parametrize(
    "failure, error", [(our_code_fails, RuntimeError), (the_database_refuses_at_commit, IntegrityError)]
)
def test_a_failure_inside_keeps_nothing_lets_the_lock_go_and_raises_djangos_error(alice, mini, failure, error):
    with pytest.raises(error), one_trip_transaction():
        limits_locked_with_figures(alice.pk, timezone.now())
        row_insert_queued(a_reservation(alice.pk, mini))
        failure(alice.pk, mini)

    assert not Reservation.objects.exists()
    assert left_clean()
    assert lockable_by_another_connection(alice.pk)


# -- one_round_trip: statements of a caller's transaction sent together (a message's send) ----------------------


def test_statements_sent_together_are_each_answered_and_hold_their_lock_until_the_commit(alice, mini):
    with transaction.atomic():
        with one_round_trip():
            users = rows_queued(f"SELECT username FROM {User._meta.db_table} WHERE id = %s", [alice.pk])
            locked = limits_locked_with_figures_queued(alice.pk, timezone.now())
            nobody = rows_queued(f"SELECT username FROM {User._meta.db_table} WHERE id = %s", [alice.pk + 1000])
        assert users() == [("alice",)]
        assert locked().figures.tokens_held == 0
        assert nobody() == []
        assert not lockable_by_another_connection(alice.pk)

    assert left_clean()
    assert lockable_by_another_connection(alice.pk)


def test_a_statement_refused_among_those_sent_together_keeps_nothing_of_the_transaction(alice, mini):
    kept = a_reservation(alice.pk, mini)
    with pytest.raises(IntegrityError), transaction.atomic():
        row_insert(kept)
        with one_round_trip():
            limits_locked_with_figures_queued(alice.pk, timezone.now())
            statement, fields = insert_statement(User, "")
            rows_queued(statement, insert_values(User(username="alice"), fields))  # her name is taken

    assert not Reservation.objects.exists()
    assert left_clean()
    assert lockable_by_another_connection(alice.pk)
