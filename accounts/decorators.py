"""login_required whose check of an async view's user runs on the event loop."""

from asgiref.sync import iscoroutinefunction
from django.contrib.auth import decorators


async def _is_authenticated(user) -> bool:
    return user.is_authenticated


def login_required(view):
    """Django's login_required. For an async view Django runs its check, a sync lambda, in a hop to a
    worker thread and back (about 100 µs of CPU); the user it checks is loaded already, so here the check
    is a coroutine, which Django awaits where it is."""
    if iscoroutinefunction(view):
        return decorators.user_passes_test(_is_authenticated)(view)
    return decorators.login_required(view)
