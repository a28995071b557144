from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction

from conversations.models import ChatModel


@pytest.fixture
def openai_upstream(db, settings):
    settings.UPSTREAM_IS_LOCAL = False
    settings.DEFAULT_MODEL = "gpt-4o-mini"
    settings.DEFAULT_MODEL_EXPLICIT = False


def seedcatalog() -> str:
    out = StringIO()
    call_command("seedcatalog", stdout=out)
    return out.getvalue()


def prices() -> dict[str, tuple[Decimal, Decimal]]:
    return {m.model_id: (m.input_price, m.output_price) for m in ChatModel.objects.all()}


def test_seedcatalog_adds_the_models_with_their_prices(openai_upstream):
    output = seedcatalog()

    assert prices() == {
        "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
        "gpt-4o": (Decimal("2.50"), Decimal("10")),
        "gpt-realtime": (Decimal("4.00"), Decimal("16.00")),
        "smollm2-135m": (Decimal(0), Decimal(0)),
        "text-embedding-3-small": (Decimal("0.02"), Decimal(0)),
        "gpt-realtime-2": (Decimal("4.00"), Decimal("16.00")),
    }
    assert "added gpt-4o-mini, gpt-4o, gpt-realtime, smollm2-135m" in output
    assert "Default model: gpt-4o-mini." in output


def test_with_an_openai_upstream_the_openai_models_are_enabled(openai_upstream):
    seedcatalog()

    assert set(ChatModel.objects.for_chat().values_list("model_id", flat=True)) == {"gpt-4o-mini", "gpt-4o"}
    assert ChatModel.objects.get(model_id="gpt-realtime").enabled  # for voice client secrets, not the chat
    assert ChatModel.objects.default().model_id == "gpt-4o-mini"


def test_with_the_local_model_only_it_is_enabled_and_the_default(db, settings):
    settings.UPSTREAM_IS_LOCAL = True
    settings.DEFAULT_MODEL = "smollm2-135m"
    settings.DEFAULT_MODEL_EXPLICIT = False

    seedcatalog()

    assert list(ChatModel.objects.enabled().values_list("model_id", flat=True)) == ["smollm2-135m"]
    assert ChatModel.objects.get(is_default=True).model_id == "smollm2-135m"


def test_seedcatalog_run_twice_adds_nothing_more(openai_upstream):
    seedcatalog()
    before = list(ChatModel.objects.order_by("pk").values())

    output = seedcatalog()

    assert list(ChatModel.objects.order_by("pk").values()) == before
    assert "added" not in output
    assert "Default model: gpt-4o-mini." in output


def test_seedcatalog_keeps_an_admins_edits(openai_upstream):
    seedcatalog()
    ChatModel.objects.filter(model_id="gpt-4o").update(input_price=Decimal("2.00"), enabled=False)
    ChatModel.objects.filter(model_id="gpt-4o-mini").update(display_name="Mini (cheap)")

    seedcatalog()

    edited = ChatModel.objects.get(model_id="gpt-4o")
    assert (edited.input_price, edited.output_price, edited.enabled) == (Decimal("2.00"), Decimal("10"), False)
    assert ChatModel.objects.get(model_id="gpt-4o-mini").display_name == "Mini (cheap)"


def test_seedcatalog_keeps_the_default_an_admin_chose(openai_upstream):
    seedcatalog()
    ChatModel.objects.update(is_default=False)
    ChatModel.objects.filter(model_id="gpt-4o").update(is_default=True)

    seedcatalog()

    assert list(ChatModel.objects.filter(is_default=True).values_list("model_id", flat=True)) == ["gpt-4o"]


def test_an_explicit_default_model_setting_wins(openai_upstream, settings):
    seedcatalog()
    settings.DEFAULT_MODEL = "gpt-4o"
    settings.DEFAULT_MODEL_EXPLICIT = True

    seedcatalog()

    assert list(ChatModel.objects.filter(is_default=True).values_list("model_id", flat=True)) == ["gpt-4o"]


def test_cost_is_exact_decimal_to_eight_places(openai_upstream):
    seedcatalog()
    mini = ChatModel.objects.get(model_id="gpt-4o-mini")

    cost = mini.cost(prompt_tokens=1000, completion_tokens=500)

    # 1000 * $0.15/M + 500 * $0.60/M
    assert cost == Decimal("0.00045")
    assert isinstance(cost, Decimal)
    assert cost.as_tuple().exponent == -8
    assert str(cost) == "0.00045000"


def test_cost_of_a_single_token_is_not_lost_to_rounding(openai_upstream):
    seedcatalog()
    mini = ChatModel.objects.get(model_id="gpt-4o-mini")
    gpt4o = ChatModel.objects.get(model_id="gpt-4o")

    assert mini.cost(prompt_tokens=1, completion_tokens=0) == Decimal("0.00000015")
    assert gpt4o.cost(prompt_tokens=0, completion_tokens=1) == Decimal("0.00001000")
    # Sums of many small costs stay exact, which floats do not.
    assert sum(mini.cost(prompt_tokens=1, completion_tokens=1) for _ in range(10)) == Decimal("0.0000075")


def test_cost_uses_the_cached_price_for_cached_tokens(openai_upstream):
    seedcatalog()
    mini = ChatModel.objects.get(model_id="gpt-4o-mini")
    assert mini.cached_input_price == Decimal("0.075")

    cost = mini.cost(prompt_tokens=1000, completion_tokens=500, cached_tokens=400)

    # 600 uncached * $0.15/M + 400 cached * $0.075/M + 500 * $0.60/M
    assert cost == Decimal("0.00042000")


def test_cost_without_a_cached_price_charges_cached_tokens_at_the_input_price(openai_upstream):
    seedcatalog()
    gpt4o = ChatModel.objects.get(model_id="gpt-4o")
    gpt4o.cached_input_price = None

    assert gpt4o.cost(prompt_tokens=1000, completion_tokens=0, cached_tokens=400) == Decimal("0.00250000")


def test_the_local_model_is_free(openai_upstream):
    seedcatalog()
    local = ChatModel.objects.get(model_id="smollm2-135m")

    assert local.cost(prompt_tokens=4000, completion_tokens=512) == Decimal(0)


def test_only_one_model_can_be_the_default(openai_upstream):
    seedcatalog()

    with pytest.raises(IntegrityError), transaction.atomic():
        ChatModel.objects.filter(model_id="gpt-4o").update(is_default=True)

    with pytest.raises(IntegrityError), transaction.atomic():
        ChatModel.objects.create(
            model_id="other", display_name="Other", context_window=1000, max_output_tokens=100, is_default=True
        )
    assert list(ChatModel.objects.filter(is_default=True).values_list("model_id", flat=True)) == ["gpt-4o-mini"]


def test_many_models_can_be_not_default(openai_upstream):
    seedcatalog()

    ChatModel.objects.create(model_id="a", display_name="A", context_window=1000, max_output_tokens=100)
    ChatModel.objects.create(model_id="b", display_name="B", context_window=1000, max_output_tokens=100)

    assert ChatModel.objects.filter(is_default=False).count() == 7  # the five seeded besides the default, and these two
