"""gpt-realtime-2, the realtime clients' default model, on sites whose catalog is seeded already.

A new site gets it from seedcatalog like every other model; here it joins an
existing catalog next to gpt-realtime, enabled as that one is.
"""

from decimal import Decimal

from django.db import migrations


def add_gpt_realtime_2(apps, schema_editor):
    ChatModel = apps.get_model("conversations", "ChatModel")
    previous = ChatModel.objects.filter(model_id="gpt-realtime").first()
    if previous is None or ChatModel.objects.filter(model_id="gpt-realtime-2").exists():
        return
    ChatModel.objects.create(
        model_id="gpt-realtime-2",
        display_name="GPT Realtime 2 (voice)",
        input_price=Decimal("4.00"),
        output_price=Decimal("16.00"),
        cached_input_price=Decimal("0.40"),
        context_window=128_000,
        max_output_tokens=4_096,
        realtime=True,
        enabled=previous.enabled,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0007_chatmodel_embedding"),
    ]

    operations = [
        migrations.RunPython(add_gpt_realtime_2, migrations.RunPython.noop),
    ]
