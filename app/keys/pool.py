"""One provider's keys: which is usable now, which to try next, and what an attempt did to it."""

from __future__ import annotations

import random
from collections.abc import Collection

from app.keys.model import KeyState, KeyStatus, Outcome, RateLimitSignal
from app.keys.strategies import Strategy
from app.keys.transitions import record_outcome, record_start


class KeyPool:
    """Selection state for one provider. Single-threaded by design: the event loop serialises calls."""

    def __init__(self, size: int, strategy: Strategy) -> None:
        self.statuses = [KeyStatus() for _ in range(size)]
        self.strategy = strategy
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.statuses)

    def candidates(self, now: float, exclude: Collection[int] = ()) -> list[int]:
        return [i for i, s in enumerate(self.statuses) if i not in exclude and s.usable(now)]

    def choose(
        self,
        now: float,
        rng: random.Random,
        *,
        exclude: Collection[int] = (),
        preferred: int | None = None,
    ) -> int | None:
        """Pick a usable key and mark it in flight; None when no key outside `exclude` is usable."""
        candidates = self.candidates(now, exclude)
        if not candidates:
            return None
        if preferred is not None and preferred in candidates:
            index = preferred
        else:
            index = self.strategy.pick(candidates, self.statuses, self.cursor, rng)
            self.cursor = (index + 1) % len(self.statuses)
        record_start(self.statuses[index])
        return index

    def finish(self, index: int, outcome: Outcome, now: float, signal: RateLimitSignal) -> None:
        record_outcome(self.statuses[index], outcome, now, signal)

    def usable_count(self, now: float) -> int:
        return sum(1 for s in self.statuses if s.usable(now))

    def next_available_in(self, now: float) -> float | None:
        """Seconds until the first cooling key is usable again; None if no key is merely cooling."""
        ends = [
            s.cooldown_until
            for s in self.statuses
            if s.state is KeyState.RATE_LIMITED and s.cooldown_until is not None
        ]
        return max(0.0, min(ends) - now) if ends else None
