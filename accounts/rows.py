"""Model instances from the rows of written-out statements, their values converted as the ORM converts them.

For the lookups every request makes, where building the query costs more
than running it (an API key with its user: 1.1 ms of CPU through the ORM,
0.1 ms written out, measured in-process on PostgreSQL).
"""

from functools import cache

from django.db import connection
from django.db.models import Model
from django.db.models.expressions import Col


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
