"""Usage accounting seams: where events go, how users map to key groups, token estimates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from app.db.stats_writer import UsageEvent
from app.providers.client import Usage


class UsageSink(Protocol):
    def record(self, event: UsageEvent) -> None:
        """Must return at once: aggregation and writes happen off the request path."""
        ...


class GroupResolver(Protocol):
    async def group_for(self, user_id: str) -> int: ...


class NullSink:
    def record(self, event: UsageEvent) -> None:
        return None


def estimate_tokens(text: str) -> int:
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
    prompt = sum(estimate_tokens(text) for text in prompt_text(params))
    produced = estimate_tokens(completion)
    return Usage(prompt, produced, prompt + produced, estimated=True)
