"""Usage accounting seams: how users map to key groups, token estimates of text and prompts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from app.providers.client import Usage


class GroupResolver(Protocol):
    async def group_for(self, user_id: str) -> int: ...


class Pricing(Protocol):
    """USD of one answer from its provider, upstream model and tokens (`access.prices.PriceBook`)."""

    def cost_usd(
        self, provider: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> float: ...


def answer_cost(pricing: Pricing | None, provider: str, model: str, usage: Usage | None) -> float:
    """An answer's cost from its final usage; 0 without prices or usage."""
    if pricing is None or usage is None:
        return 0.0
    return pricing.cost_usd(provider, model, usage.prompt_tokens, usage.completion_tokens)


def text_tokens(text: str) -> int:
    """~4 characters a token: the usual rule of thumb for English with BPE tokenizers."""
    return max(1, (len(text) + 3) // 4) if text else 0


def prompt_text(params: dict[str, Any]) -> Iterable[str]:
    for message in params.get("messages", ()):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            yield from (p["text"] for p in content if isinstance(p, dict) and "text" in p)


def estimate_usage(params: dict[str, Any], completion: str) -> Usage:
    prompt = sum(text_tokens(text) for text in prompt_text(params))
    produced = text_tokens(completion)
    return Usage(prompt, produced, prompt + produced, estimated=True)
