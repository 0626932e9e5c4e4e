"""USD per 1M tokens by model: built-ins for the catalog's default models, MODEL_PRICES over them."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from app.config import parse_prices

logger = logging.getLogger("keypool.access")

# Published list prices (USD per 1M prompt / completion tokens) of the catalog's default
# models, late 2025. Operators with other contracts override them with MODEL_PRICES.
BUILTIN_PRICES: dict[str, tuple[float, float]] = {
    "groq/llama-3.1-8b-instant": (0.05, 0.08),
    "cerebras/llama3.1-8b": (0.10, 0.10),
    "openai/gpt-4o-mini": (0.15, 0.60),
    "xai/grok-3-mini": (0.30, 0.50),
    "openrouter/meta-llama/llama-3.1-8b-instruct": (0.02, 0.03),
    "together/meta-llama/Llama-3.3-70B-Instruct-Turbo": (0.88, 0.88),
    "mistral/mistral-small-latest": (0.10, 0.30),
    "deepseek/deepseek-chat": (0.27, 1.10),
    "gemini/gemini-2.0-flash": (0.10, 0.40),
}


@dataclass(slots=True)
class PriceBook:
    """Looks a model up as `provider/model`, then as the bare model; unknown costs 0 (warned once)."""

    prices: dict[str, tuple[float, float]]
    _warned: set[str]

    @classmethod
    def build(cls, overrides: str | None) -> PriceBook:
        return cls({**BUILTIN_PRICES, **parse_prices(overrides)}, set())

    def price(self, provider: str, model: str) -> tuple[float, float] | None:
        found = self.prices.get(f"{provider}/{model}")
        return found if found is not None else self.prices.get(model)

    def cost_usd(
        self, provider: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> float:
        found = self.price(provider, model)
        if found is None:
            name = f"{provider}/{model}"
            if name not in self._warned:
                self._warned.add(name)
                logger.warning(
                    "no price for model %s: its cost counts as 0 (set MODEL_PRICES)", name
                )
            return 0.0
        return (prompt_tokens * found[0] + completion_tokens * found[1]) / 1_000_000
