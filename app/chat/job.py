"""One request's walk over the pools: what the fallback loop and the fair line both read."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.chat.failures import Attempt
from app.chat.pools import KeyPoolView
from app.chat.routing import Route
from app.keys.model import Grant
from app.providers.client import ProviderClient

T = TypeVar("T")


class KeySpread:
    """The keys taken by the requests of one batch, so that siblings land on different keys."""

    def __init__(self) -> None:
        self.taken: dict[str, Counter[int]] = {}
        # Held across one acquire, so siblings never choose from the same picture of the pool.
        self.lock = asyncio.Lock()

    def avoid(self, provider: str) -> Mapping[int, int]:
        return dict(self.taken.get(provider, {}))

    def add(self, provider: str, index: int) -> None:
        self.taken.setdefault(provider, Counter())[index] += 1


@dataclass(slots=True)
class Job(Generic[T]):
    """One request's walk over the pool."""

    route: Route
    attempt: Callable[[ProviderClient], Awaitable[T]]
    fallback: bool
    group: int | None
    tokens: int
    spread: KeySpread | None
    deadline: float
    user_id: str | None = None
    weight: float = 1.0  # the user's tier weight in fair waiting
    attempts: list[Attempt] = field(default_factory=list)
    tried: dict[str, set[int]] = field(default_factory=dict)
    entered: set[str] = field(default_factory=set)  # providers that granted this request a key
    closed: set[str] = field(default_factory=set)  # providers this request is done with
    skipped: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, Grant] = field(default_factory=dict)  # the last "no key" per provider
    views: dict[str, KeyPoolView] = field(default_factory=dict)  # the keys last asked, per provider
    cooldown_waits: int = 0

    @property
    def spent(self) -> bool:
        """`fallback: false` allows one attempt."""
        return not self.fallback and bool(self.attempts)

    def own_keys(self, provider: str) -> bool:
        """Whether the user's own keys (BYOK) serve this provider: their private pool waits
        outside the shared fair line, for its earliest turn as with several providers."""
        view = self.views.get(provider)
        return view is not None and view.byok
