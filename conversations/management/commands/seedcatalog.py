from django.core.management.base import BaseCommand

from conversations.models import ChatModel
from conversations.services.catalog import catalog_seed


class Command(BaseCommand):
    help = "Add the seed models to the catalog (gpt-4o-mini, gpt-4o, smollm2-135m, ...); existing rows are left alone."

    def handle(self, *args, **options):
        added = catalog_seed()
        if added:
            self.stdout.write(f"Model catalog: added {', '.join(added)}.")
        default = ChatModel.objects.default()
        self.stdout.write(f"Default model: {default.model_id if default else 'none enabled'}.")
