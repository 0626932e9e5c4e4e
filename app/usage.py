"""The usage value type and its sink: what one settled attempt cost, and where that goes.

Neutral ground: the chat layer produces events, the stats writer (`db/`) and the metrics count
them, and none of them has to import another just for this type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One upstream attempt: a request of ``key_index``, for a user's group or none.

    ``error`` marks a failed attempt and ``rate_limited`` a 429 (set both for a 429).
    ``at`` is unix seconds; 0 means "now" by the writer's clock. ``model`` and ``user_id``
    (None when unknown) are there for cost tracking per model and per user; ``cost_usd`` is
    the attempt's price (set by the spend sink, `access.spend.SpendSink`; 0 when unpriced).
    """

    provider: str
    key_index: int
    fingerprint: str
    key_group: int | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: bool = False
    rate_limited: bool = False
    at: float = 0.0
    model: str | None = None
    user_id: str | None = None
    # A user's own key (bring your own key): not a shared pool key, so no per-key stats row;
    # `key_index` is its index in the user's private pool and means nothing to the shared one.
    byok: bool = False

    cost_usd: float = 0.0
    outcome: str = ""  # the attempt's Outcome value, for metrics ("" when not known)
    seconds: float | None = None  # the attempt's duration (the upstream duration histogram)

    @property
    def key_label(self) -> str:
        """The key as metrics label it: its fingerprint, or "byok" (one label for every
        user's own key, so users do not multiply the series)."""
        return "byok" if self.byok else self.fingerprint


class UsageSink(Protocol):
    def record(self, event: UsageEvent) -> None:
        """Must return at once: aggregation and writes happen off the request path."""
        ...


class NullSink:
    def record(self, event: UsageEvent) -> None:
        return None
