"""Django's PostgreSQL backend, its pool checking a connection before handing it out with a round trip only when
the connection may be broken."""

from django.db.backends.postgresql import base
from psycopg import Connection, OperationalError, pq
from psycopg_pool import ConnectionPool

from chatsite.sockets import readable


def connection_check(connection: Connection) -> None:
    """Raise if the connection cannot serve (the pool then replaces it); return quietly if it can.

    Django's own check (CONN_HEALTH_CHECKS with a pool) sends an empty query
    every time: a round trip at the start of every database step. A connection
    that PostgreSQL ended (a restart, a terminated backend, an idle timeout)
    has something to read, its goodbye or the end of the stream, and only then
    is the empty query sent: it fails on such a connection. An idle connection
    that nobody ended has nothing to read.
    """
    if connection.closed or connection.pgconn.status != pq.ConnStatus.OK:
        raise OperationalError("the connection is closed")
    if readable(connection.fileno()):
        ConnectionPool.check_connection(connection)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None:
            # Django makes the pool with its own check (or none) and takes no other: this is where psycopg_pool
            # keeps the one it calls.
            pool._check = connection_check
        return pool
