"""How a logged-in browser's user is found: Django's ModelBackend, the user read by a written-out statement."""

from django.contrib.auth.backends import ModelBackend
from django.db import connection

from accounts.models import User
from accounts.rows import columns, first_row, instance_from


class UserBackend(ModelBackend):
    """Django's ModelBackend (passwords, permissions), with the session's user looked up by a written-out statement.

    Every request of a logged-in browser looks its user up, two a message
    (its POST and its stream), and the ORM took longer to build that query
    than PostgreSQL took to run it.
    """

    def get_user(self, user_id):
        pk = connection.ops.quote_name(User._meta.pk.column)
        row = first_row(f"SELECT {columns(User, 'u')} FROM {User._meta.db_table} u WHERE u.{pk} = %s", [user_id])
        if row is None:
            return None
        user = instance_from(User, row)
        return user if self.user_can_authenticate(user) else None
