"""PostgreSQL plans a statement a connection runs often once, not on every run (DB_PREPARED_STATEMENTS): Django
turns psycopg's prepared statements off unless told, and every lookup was parsed and planned anew."""

import json

import pytest
from django.db import connection

from accounts.services import api_key_authenticate, api_key_create
from tests.test_deploy_check import manage

pytestmark = pytest.mark.django_db(transaction=True)


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL (make test starts one)")
def test_the_key_lookup_of_every_api_call_is_prepared_once_it_runs_often(alice):
    _, secret = api_key_create(user=alice, name="app")
    lookups = [api_key_authenticate(secret=secret, ip="127.0.0.1") for _ in range(8)]

    assert {key.user.username for key in lookups} == {"alice"}
    assert [statement for statement in prepared_statements() if "key_hash" in statement]


def test_prepared_statements_can_be_turned_off_for_a_pooler_that_loses_them(tmp_path):
    show = "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS']['prepare_threshold'])"
    database = {"DATABASE_URL": "postgres://chatsite:pw@127.0.0.1:5432/chatsite"}

    default = manage(tmp_path, "shell", "--no-imports", "--command", show, **database)
    off = manage(tmp_path, "shell", "--no-imports", "--command", show, **database, DB_PREPARED_STATEMENTS="false")
    bad = manage(tmp_path, "shell", "--no-imports", "--command", show, **database, DB_PREPARED_STATEMENTS="maybe")

    assert [json.loads(default.stdout), off.stdout.strip()] == [5, "None"], default.stderr + off.stderr
    assert bad.returncode != 0
    assert "DB_PREPARED_STATEMENTS must be true or false, not 'maybe'" in bad.stderr
