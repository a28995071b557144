"""Rows read and written by written-out statements: model instances from them, their values converted as the
ORM converts them, and new instances' rows inserted.

For the lookups and writes every request makes, where building the query
costs more than running it (an API key with its user: 1.1 ms of CPU through
the ORM, 0.1 ms written out, measured in-process on PostgreSQL).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from django.db import connection, transaction
from django.db.models import Model
from django.db.models.expressions import Col
from psycopg import pq


def columns(model: type[Model], alias: str) -> str:
    """The model's columns, in the order instance_from() takes them, under the table alias `alias`."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(field.column)}" for field in model._meta.concrete_fields)


def instance_from(model: type[Model], values) -> Model:
    """An instance of `model` from its columns' values (as columns() lists them), as if the ORM had loaded it."""
    converted = list(values)
    for index, column, converters in _converters(model, connection.vendor):
        for convert in converters:
            converted[index] = convert(converted[index], column, connection)
    return model.from_db(connection.alias, None, converted)


@cache
def _converters(model: type[Model], vendor: str) -> list[tuple[int, Col, list]]:
    """The backend's and the fields' converters of each column that has any (SQLite's dates and booleans...).

    Kept per backend: a converter reads only the connection it is given, and settings.
    """
    table = model._meta.db_table
    found = []
    for index, field in enumerate(model._meta.concrete_fields):
        column = Col(table, field)
        converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        if converters:
            found.append((index, column, converters))
    return found


def first_row(statement: str, params) -> tuple | None:
    """The statement's first row; None when it has none, or returns no rows at all."""
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchone() if _returns_rows(cursor) else None


def _returns_rows(cursor) -> bool:
    """Whether the statement just run returns rows, even none. On PostgreSQL its result's status says so:
    psycopg's cursor.description makes an object for each column every time it is read (40 for a key and
    its user), on every lookup."""
    result = getattr(cursor.cursor, "pgresult", None)
    if result is None:  # SQLite; or queued in psycopg's pipeline mode, its result not read yet
        return cursor.description is not None
    return result.status == pq.ExecStatus.TUPLES_OK


@cache
def insert_statement(model: type[Model], unique: str) -> tuple[str, list]:
    """The INSERT of a new row of `model` returning its primary key, and the fields its parameters are of."""
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    conflict = f" ON CONFLICT ({quote(model._meta.get_field(unique).column)}) DO NOTHING" if unique else ""
    statement = (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))}){conflict} RETURNING {quote(model._meta.pk.column)}"
    )
    return statement, fields


def insert_values(instance: Model, fields: list) -> list:
    return [field.get_db_prep_save(getattr(instance, field.attname), connection) for field in fields]


def in_pipeline() -> bool:
    """Whether statements are being queued in psycopg's pipeline mode (PostgreSQL), sent with those after them."""
    pg = connection.connection if connection.vendor == "postgresql" else None
    return pg is not None and pg.pgconn.pipeline_status != pq.PipelineStatus.OFF


@contextmanager
def one_round_trip() -> Iterator[None]:
    """The statements run inside go to PostgreSQL together as the block ends, with the transaction's BEGIN if it
    is still to be sent: one round trip for all of them (psycopg's pipeline mode). Run them with rows_queued and
    read their answers after the block; a read inside it would wait for a round trip of its own.

    Inside one_trip_transaction they go with its next read or its COMMIT, and on SQLite they run one by one.
    """
    if connection.vendor != "postgresql" or in_pipeline():
        yield
        return
    connection.ensure_connection()
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def rows_queued(statement: str, params) -> Callable[[], list[tuple]]:
    """Run a statement that returns rows; its rows when the answer is called for (see one_round_trip)."""
    cursor = connection.cursor()
    try:
        cursor.execute(statement, params)
        if not in_pipeline():  # answered already: read it before another statement runs
            with cursor:
                rows = cursor.fetchall()
            return lambda: rows
    except BaseException:
        cursor.close()
        raise

    def answer() -> list[tuple]:
        with cursor:
            return cursor.fetchall()

    return answer


def row_insert_queued(instance: Model) -> Callable[[], None]:
    """row_insert, with the new primary key set when the answer is called for: in psycopg's pipeline mode the
    INSERT is sent with the statements that follow it (one_trip_transaction's COMMIT) and read after them.
    Elsewhere the row is written at once (see rows_queued)."""
    statement, fields = insert_statement(type(instance), "")
    rows = rows_queued(statement, insert_values(instance, fields))

    def answer() -> None:
        inserted(instance, rows()[0])

    return answer


def inserted(instance: Model, row: tuple | None) -> bool:
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding, instance._state.db = False, connection.alias
    return True


@cache
def _update_statement(model: type[Model], names: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(model._meta.get_field(name).column)} = %s" for name in names)
    return f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {quote(model._meta.pk.column)} = %s"


def row_update(model: type[Model], pk, **values) -> None:
    """Set fields of the row of `model` with primary key `pk` (a foreign key by its id), in one statement."""
    params = [model._meta.get_field(name).get_db_prep_save(value, connection) for name, value in values.items()]
    first_row(_update_statement(model, tuple(values)), [*params, pk])


def row_insert(instance: Model, *, unique: str = "") -> bool:
    """Write a new model instance's row and set its primary key, in one statement.

    With `unique` (a field with a unique index), a row that already has the
    instance's value there wins: nothing is written and the answer is False.
    """
    statement, fields = insert_statement(type(instance), unique)
    return inserted(instance, first_row(statement, insert_values(instance, fields)))


@contextmanager
def one_trip_transaction() -> Iterator[None]:
    """A transaction for written-out statements whose BEGIN goes with its first statements and whose COMMIT
    with its last: on PostgreSQL, outside any other transaction, each piece of work whose answer is awaited is
    one round trip, and the transaction costs none of its own.

    Django's atomic() costs two more: psycopg sends BEGIN alone and waits for it, and COMMIT alone (unless
    one_round_trip sends the BEGIN with its statements). The statements inside are read only through
    rows_queued, or queued by row_insert_queued and read once the block has ended: in pipeline mode a
    cursor knows neither its columns nor its row count before its results are fetched, so first_row, and the
    ORM's saves and updates, would take a row for none. Django does not know of this transaction either (its
    atomic() cannot nest in it, its on_commit would run at once). Elsewhere (SQLite, a caller's or a test's
    atomic block) this is atomic(savepoint=False).
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        with transaction.atomic(savepoint=False):
            yield
        return
    connection.ensure_connection()
    pg = connection.connection
    try:
        with connection.wrap_database_errors, pg.pipeline():
            pg.execute("BEGIN")
            yield
            pg.execute("COMMIT")
    except BaseException:
        # An error in the pipeline, or in the code between its statements: nothing of it is kept.
        if not pg.closed and pg.info.transaction_status != pq.TransactionStatus.IDLE:
            with connection.wrap_database_errors:
                pg.rollback()
        raise
