"""The pool's check of a connection before it hands it out: what PostgreSQL ended is replaced, and costs a round
trip only then (chatsite/postgresql/base.py)."""

import asyncio
import time

import psycopg
import pytest
from django.db import connection

from chatsite.postgresql.base import connection_check
from chatsite.sockets import readable
from conversations.db import db_step

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (make test starts one)"),
]


@pytest.fixture(autouse=True)
def django_connection_given_back(transactional_db):
    """These tests end every backend of the test database, this thread's Django connection among them: it is
    given back before the database is emptied after the test, so that the emptying gets a working one."""
    yield
    connection.close()


def connect(**options) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"], **options
    )


def backends_end(admin: psycopg.Connection) -> int:
    """Terminate every other backend of the test database, as a restart or an administrator would."""
    ended = admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return ended.fetchone()[0]


def last_query(admin: psycopg.Connection, pid: int) -> str:
    return admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0]


def until_readable(conn: psycopg.Connection, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not readable(conn.fileno()):
        assert time.monotonic() < deadline, "PostgreSQL's goodbye never came"
        time.sleep(0.01)


def test_a_connection_nobody_ended_is_handed_out_without_a_query():
    with connect(autocommit=True) as admin, connect(autocommit=True) as pooled:
        pooled.execute("SELECT 'the last real query'")

        connection_check(pooled)
        connection_check(pooled)

        assert last_query(admin, pooled.info.backend_pid) == "SELECT 'the last real query'"
        assert pooled.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_postgresql_ended_fails_the_check():
    with connect(autocommit=True) as admin, connect(autocommit=True) as pooled:
        assert backends_end(admin) >= 1
        until_readable(pooled)

        with pytest.raises(psycopg.OperationalError):
            connection_check(pooled)


def test_a_closed_connection_fails_the_check():
    pooled = connect(autocommit=True)
    pooled.close()

    with pytest.raises(psycopg.OperationalError):
        connection_check(pooled)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


async def test_database_steps_go_on_working_when_postgresql_ends_every_pooled_connection():
    before = {await db_step(backend_pid) for _ in range(8)}
    with connect(autocommit=True) as admin:
        assert backends_end(admin) >= len(before)
    await asyncio.sleep(0.2)  # PostgreSQL's goodbyes reach the pooled sockets

    after = {await db_step(backend_pid) for _ in range(8)}

    assert not after & before
