"""In-process key state: the default backend, and the fallback when Redis is unreachable."""

from __future__ import annotations

import copy
import random
from collections.abc import Collection, Mapping

from app.keys.breaker import CircuitBreaker
from app.keys.model import KeyStatus, Outcome, RateLimitSignal
from app.keys.pool import KeyPool
from app.keys.strategies import Strategy
from app.keys.transitions import record_probe, set_disabled
from app.state.base import ProviderSnapshot


class MemoryStateStore:
    """Pools and breakers in this process. Coroutines only to honour the shared interface."""

    def __init__(
        self,
        pools: Mapping[str, KeyPool],
        *,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        self.pools = dict(pools)
        self.breakers = {
            name: CircuitBreaker(breaker_threshold, breaker_reset_s) for name in self.pools
        }
        self._rng = rng or random.Random()
        self._provider_cursor = 0

    @classmethod
    def build(
        cls,
        sizes: Mapping[str, int],
        strategies: Mapping[str, Strategy],
        **kwargs: int | float | random.Random,
    ) -> MemoryStateStore:
        pools = {name: KeyPool(size, strategies[name]) for name, size in sizes.items()}
        return cls(pools, **kwargs)  # type: ignore[arg-type]

    async def acquire(
        self,
        provider: str,
        now: float,
        *,
        exclude: Collection[int] = (),
        preferred: int | None = None,
    ) -> int | None:
        return self.pools[provider].choose(now, self._rng, exclude=exclude, preferred=preferred)

    async def release(
        self,
        provider: str,
        index: int | None,
        outcome: Outcome,
        now: float,
        signal: RateLimitSignal,
    ) -> None:
        if index is not None:
            self.pools[provider].finish(index, outcome, now, signal)
        self.breakers[provider].record(outcome, now)

    async def allow_provider(self, provider: str, now: float) -> bool:
        return self.breakers[provider].allow(now)

    async def next_provider_offset(self, count: int) -> int:
        offset = self._provider_cursor % count
        self._provider_cursor = offset + 1
        return offset

    async def retry_after(self, provider: str, now: float) -> float | None:
        return self.pools[provider].next_available_in(now)

    async def snapshot(self, provider: str, now: float) -> ProviderSnapshot:
        return ProviderSnapshot(
            keys=copy.deepcopy(self.pools[provider].statuses),
            circuit=self.breakers[provider].state(now),
        )

    async def set_disabled(self, provider: str, index: int, disabled: bool) -> KeyStatus:
        status = self.pools[provider].statuses[index]
        set_disabled(status, disabled)
        return copy.copy(status)

    async def record_probe(
        self, provider: str, index: int, *, ok: bool, auth_failed: bool, now: float
    ) -> KeyStatus:
        status = self.pools[provider].statuses[index]
        record_probe(status, ok=ok, auth_failed=auth_failed, now=now)
        return copy.copy(status)

    async def aclose(self) -> None:
        return None
