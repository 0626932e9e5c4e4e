"""Request pacing with a burst: GCRA with a tolerance, never over `rpm` in any 60-s window.

`pacing.py` spaces requests `60 / rpm` apart from the first one (a burst of one), which wastes
what a provider allows: they refill continuously, so a key idle for a while may take several
requests at once. GCRA with a burst tolerance allows `burst` back-to-back starts after idling,
then one per emission interval T. Arrivals conforming to GCRA(T, τ = (burst - 1)·T) number at
most floor(t / T) + burst in any t seconds, so choosing T = 60 / (rpm - burst + 1) · (1 + h),
with the same small headroom h as `pacing.py`, keeps every 60-s window at or under `rpm`
(floor((rpm - burst + 1) / (1 + h)) ≤ rpm - burst). A bigger burst buys latency after idling
with a lower sustained rate; `default_burst` keeps the sustained rate within 10 % of the budget.

State is one float per key, the theoretical arrival time `tat`, exactly like `pacing.py`, so the
Redis script keeps it in the same field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.keys.pacing import REQUEST_HEADROOM


@dataclass(frozen=True, slots=True)
class BurstPace:
    """A per-key request budget `rpm` (per 60 s) allowing `burst` back-to-back starts."""

    rpm: float
    burst: int = 1
    share: int = 1

    def __post_init__(self) -> None:
        if self.rpm <= 0 or self.burst < 1 or self.share < 1:
            raise ValueError("rpm must be positive, burst and share at least 1")

    @property
    def budget(self) -> float:
        """This process's part of the 60-s budget (whole requests once it is at least one)."""
        part = self.rpm / self.share
        return math.floor(part) if part >= 1 else part

    @property
    def effective_burst(self) -> int:
        """The burst, capped so the budget still covers it (a 3-rpm key cannot burst 10)."""
        return max(1, min(self.burst, math.floor(self.budget)))

    @property
    def interval(self) -> float:
        """T: seconds between starts once the burst is spent."""
        return 60.0 / (self.budget - self.effective_burst + 1) * (1 + REQUEST_HEADROOM)

    @property
    def tolerance(self) -> float:
        """τ: how far ahead of `tat` a start may be."""
        return (self.effective_burst - 1) * self.interval


def default_burst(rpm: float) -> int:
    """A tenth of the budget, at least one: bursts of a few requests, ≥ 90 % sustained rate."""
    return max(1, math.floor(rpm / 10))


def burst_slot_at(tat: float, pace: BurstPace, now: float) -> float:
    """The earliest start, at or after `now`, that the key's budget allows."""
    return max(now, tat - pace.tolerance)


def burst_take(tat: float, pace: BurstPace, at: float) -> float:
    """The key's new `tat` once a request starts at `at` (which `burst_slot_at` allowed)."""
    return max(tat, at) + pace.interval
