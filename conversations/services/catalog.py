"""The model catalog's seed."""

from decimal import Decimal

from django.conf import settings
from django.db import transaction

from conversations.models import ChatModel

# Seeded on first run; prices in USD per million tokens. Admins edit them in admin.
CATALOG_SEED = [
    {
        "model_id": "gpt-4o-mini",
        "display_name": "GPT-4o mini",
        "input_price": Decimal("0.15"),
        "output_price": Decimal("0.60"),
        "cached_input_price": Decimal("0.075"),
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        # gpt-4o-mini counts images in many more tokens than gpt-4o, at a lower price per token.
        "accepts_images": True,
        "image_base_tokens": 2_833,
        "image_tile_tokens": 5_667,
        "local": False,
    },
    {
        "model_id": "gpt-4o",
        "display_name": "GPT-4o",
        "input_price": Decimal("2.50"),
        "output_price": Decimal("10.00"),
        "cached_input_price": Decimal("1.25"),
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        "accepts_images": True,
        "local": False,
    },
    {
        "model_id": "gpt-realtime",
        "display_name": "GPT Realtime (voice)",
        "input_price": Decimal("4.00"),
        "output_price": Decimal("16.00"),
        "cached_input_price": Decimal("0.40"),
        "context_window": 32_000,
        "max_output_tokens": 4_096,
        "realtime": True,
        "local": False,
    },
    {
        "model_id": "smollm2-135m",
        "display_name": "SmolLM2 135M (local)",
        "input_price": Decimal(0),
        "output_price": Decimal(0),
        "cached_input_price": None,
        "context_window": 4_096,
        "max_output_tokens": 512,
        "local": True,
    },
    {
        "model_id": "text-embedding-3-small",
        "display_name": "Text embedding 3 small",
        "input_price": Decimal("0.02"),
        "output_price": Decimal(0),
        "cached_input_price": None,
        "context_window": 8_191,
        "max_output_tokens": 0,
        "embedding": True,
        "local": False,
    },
    # The realtime clients' default (the Realtime seed's); gpt-realtime stays for apps that ask for it.
    {
        "model_id": "gpt-realtime-2",
        "display_name": "GPT Realtime 2 (voice)",
        "input_price": Decimal("4.00"),
        "output_price": Decimal("16.00"),
        "cached_input_price": Decimal("0.40"),
        "context_window": 128_000,
        "max_output_tokens": 4_096,
        "realtime": True,
        "local": False,
    },
]


def catalog_seed() -> list[str]:
    """Add the catalog's seed models that are missing, leaving admins' edits alone. Returns the ids added.

    gpt-realtime-2 and gpt-realtime are Realtime (voice) models: offered for client secrets, never in the chat;
    text-embedding-3-small is offered at /v1/embeddings only.

    New rows are enabled when they fit the configured upstream (the local model
    without OPENAI_BASE_URL, the OpenAI models with it). An explicit
    DEFAULT_MODEL becomes the default; otherwise one is set only if none is.
    """
    added = []
    with transaction.atomic():
        for seed in CATALOG_SEED:
            fields = {key: value for key, value in seed.items() if key != "local"}
            _, created = ChatModel.objects.get_or_create(
                model_id=seed["model_id"],
                defaults=fields | {"enabled": seed["local"] == settings.UPSTREAM_IS_LOCAL},
            )
            if created:
                added.append(seed["model_id"])
        wanted = ChatModel.objects.filter(model_id=settings.DEFAULT_MODEL).first()
        has_default = ChatModel.objects.filter(is_default=True).exists()
        if wanted and (settings.DEFAULT_MODEL_EXPLICIT or not has_default):
            ChatModel.objects.filter(is_default=True).exclude(pk=wanted.pk).update(is_default=False)
            ChatModel.objects.filter(pk=wanted.pk).update(is_default=True, enabled=True)
    return added
