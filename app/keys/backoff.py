"""Waiting for a cooling pool: the deadline arithmetic and exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How long a request may wait rather than be answered 429 at once.

    `deadline_s` (REQUEST_DEADLINE_S) bounds waiting for a cooldown to end; `queue_s`
    (PACING_MAX_WAIT_S) bounds waiting for a pacing slot. The second is short on purpose: under
    overload every admitted request would wait that long, so the excess must get a fast 429
    instead. Each cooldown wait adds full jitter (AWS's "full jitter" backoff) growing as
    `jitter_base_s * 2**n` up to `jitter_cap_s`, so requests that waited for the same announced
    reset do not all arrive at the provider in the same millisecond.
    """

    deadline_s: float = 30.0
    queue_s: float = 0.25
    jitter_base_s: float = 0.05
    jitter_cap_s: float = 0.5

    def bounds(self, remaining_s: float) -> tuple[float, float]:
        """(longest cooldown wait, longest pacing wait) for a request with `remaining_s` left."""
        remaining = max(0.0, remaining_s)
        return remaining, min(self.queue_s, remaining)

    def jitter(self, waits_so_far: int, rng: random.Random) -> float:
        return full_jitter(waits_so_far, rng, self.jitter_base_s, self.jitter_cap_s)


def full_jitter(attempt: int, rng: random.Random, base_s: float, cap_s: float) -> float:
    """A uniform delay in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap_s, base_s * 2 ** min(max(attempt, 0), 32))
    return rng.uniform(0.0, ceiling)
