"""Proactive pacing: per-key request and token budgets as GCRA buckets, and request cost estimates.

GCRA (the virtual-scheduling form of a leaky bucket) keeps one number per bucket, the theoretical
arrival time `tat`, so a shared backend stores two floats per key. A request may start at
`slot_at(...)`; `take(...)` books it, which may be in the future: that is how a request reserves
the next free slot instead of polling for it.

Requests get a burst of one: starts are at least `60 / rpm` seconds apart (plus a small
headroom, because a provider counts arrivals, which network jitter can bunch), so no 60-second
window ever holds more than `rpm` of them. Tokens are estimates, so their bucket allows a burst
of one second's budget and refills at the rate that keeps any 60-second window within `tpm`; a
single request larger than that burst goes alone once the bucket is full.

`burst` > 1 lets a key that idled take that many requests back to back (GCRA with a tolerance,
see `burst.py`): the spacing then widens so that no 60-s window still holds more than `rpm`.

`share` splits a budget between processes that cannot see each other's buckets (several workers
without a shared store, or instances cut off from Redis): each keeps to `1/share` of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from app.keys.model import KeyStatus

if TYPE_CHECKING:
    from app.keys.burst import BurstPace

# Starts are spaced this much wider than the budget strictly allows: a provider enforcing a
# sliding window sees our requests after a network hop whose delay varies by a few milliseconds.
# The same margin lets a booked start go up to 60 s x REQUEST_HEADROOM late (`request_slip`)
# without any 60-s window holding more than the budget. 1 % cost a paced pool 1 % of its
# capacity: at exactly full demand its backlog grew by 10 ms a second (300 ms in 30 s). 0.25 %
# left a provider counting per second 2.5 ms for our processes' lateness: two workers on one
# busy core then earned upstream 429s.
REQUEST_HEADROOM = 0.005
# Completion tokens assumed when a request sets no max_tokens.
DEFAULT_COMPLETION_TOKENS = 512
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Pace:
    """One provider's per-key budgets; `None` leaves that dimension unpaced. Budgets may be
    fractional: a learned 100 requests a day is 0.069 per minute."""

    rpm: float | None = None
    tpm: float | None = None
    share: int = 1
    burst: int = 1

    @property
    def paced(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def shared_by(self, processes: int) -> Pace:
        """This budget split evenly between `processes` that pace independently."""
        return replace(self, share=max(1, processes))

    @property
    def request_interval(self) -> float:
        if not self.rpm:
            return 0.0
        if self.burst > 1:
            return self._burst_pace().interval
        return 60.0 / self.rpm * (1 + REQUEST_HEADROOM) * self.share

    @property
    def request_slip(self) -> float:
        """How late a booked request may start and still keep the key within its budget: a
        start that many seconds after its slot leaves every 60-s window at or under `rpm`
        (the spacing's headroom pays for it: n starts span at least (n - 1)·T - slip, and
        `rpm`·T - 60·h ≥ 60). 0 with a token budget, whose bucket has no such margin."""
        return 60.0 * REQUEST_HEADROOM if self.rpm and not self.tpm else 0.0

    @property
    def request_tolerance(self) -> float:
        """How far ahead of the request `tat` a start may be: 0 without a burst."""
        return self._burst_pace().tolerance if self.rpm and self.burst > 1 else 0.0

    def _burst_pace(self) -> BurstPace:
        from app.keys.burst import BurstPace  # burst.py imports REQUEST_HEADROOM from here

        return BurstPace(float(self.rpm or 0.0), self.burst, self.share)

    @property
    def token_burst(self) -> float:
        return self.tpm / self.share / 60.0 if self.tpm else 0.0

    @property
    def token_interval(self) -> float:
        """Seconds per token, chosen so burst + 60 s of refill never exceeds `tpm` (our share)."""
        if not self.tpm:
            return 0.0
        return 60.0 / (self.tpm / self.share - self.token_burst)


def estimate_tokens(prompt_chars: int, max_tokens: int | None) -> int:
    """What a request may cost: its prompt at ~4 characters a token plus the completion cap."""
    completion = max_tokens if max_tokens is not None else DEFAULT_COMPLETION_TOKENS
    return math.ceil(prompt_chars / CHARS_PER_TOKEN) + completion


def slot_at(status: KeyStatus, pace: Pace, tokens: int, now: float) -> float:
    """The earliest time, at or after `now`, this key may start a request of `tokens`."""
    at = now
    if pace.rpm:
        at = max(at, status.tat_requests - pace.request_tolerance)
    if pace.tpm:
        burst = pace.token_burst
        room = burst - min(float(tokens), burst)
        at = max(at, status.tat_tokens - room * pace.token_interval)
    return at


def take(status: KeyStatus, pace: Pace, tokens: int, at: float) -> None:
    """Book a request starting at `at` (which `slot_at` allowed) against the key's budgets."""
    if pace.rpm:
        status.tat_requests = max(status.tat_requests, at) + pace.request_interval
    if pace.tpm:
        status.tat_tokens = max(status.tat_tokens, at) + tokens * pace.token_interval
