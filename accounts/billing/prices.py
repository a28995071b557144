"""Prices of a model as a call takes them, and what tokens cost at them."""

from dataclasses import dataclass
from decimal import Decimal

MONEY_PLACES = Decimal("0.00000001")
PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    """USD per million tokens of one model, as taken when a call starts."""

    input: Decimal
    output: Decimal
    cached_input: Decimal

    def cost(self, *, prompt_tokens: int, completion_tokens: int = 0, cached_tokens: int = 0) -> Decimal:
        uncached = max(prompt_tokens - cached_tokens, 0)
        total = uncached * self.input + cached_tokens * self.cached_input + completion_tokens * self.output
        return (total / PER_MILLION).quantize(MONEY_PLACES)
