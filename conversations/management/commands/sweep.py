from django.core.management.base import BaseCommand

from conversations.services.replies import dead_processes_sweep


class Command(BaseCommand):
    help = (
        "Clean up after server processes that died: mark their replies interrupted (text kept) and settle "
        "their calls, releasing the budget they held. Every server process also runs this on a timer; "
        "run it from cron when no server is up."
    )

    def handle(self, *args, **options):
        replies, calls = dead_processes_sweep()
        self.stdout.write(f"Interrupted {replies} replies and settled {calls} other calls of dead processes.")
