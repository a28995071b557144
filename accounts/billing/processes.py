"""Which server process this is, and the heartbeat that tells the others it is alive."""

import os
import secrets
import socket

from django.utils import timezone

from accounts.models import ServerProcess

# Host and pid tell an operator which process it was; the random part keeps a
# restarted process with a reused pid from passing for its dead predecessor.
PROCESS_NAME = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def process_heartbeat() -> None:
    """Say this process is alive (the first call registers it)."""
    now = timezone.now()
    if not ServerProcess.objects.filter(name=PROCESS_NAME).update(seen_at=now):
        ServerProcess.objects.get_or_create(name=PROCESS_NAME, defaults={"started_at": now, "seen_at": now})


def process_leave() -> None:
    """This process is shutting down, having settled its calls."""
    ServerProcess.objects.filter(name=PROCESS_NAME).delete()
