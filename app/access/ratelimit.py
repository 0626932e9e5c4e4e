"""Per-user request limits: at most `rpm` admissions in any 60-second window (a sliding log).

A log, not GCRA: GCRA with a burst of `rpm` lets rpm+1 requests into some 60-s window, and
the contract is "never more than rpm in any window". The log holds at most `rpm` timestamps
per user, so its memory is bounded by the limit itself.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0
_SWEEP_EVERY = 4096  # admissions between sweeps of idle users


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one admission; times are seconds from now."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the window is empty again (OpenAI's x-ratelimit-reset-requests)
    retry_after_s: float  # until the next admission is possible (0 when allowed)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit-requests", str(self.limit).encode()),
            (b"x-ratelimit-remaining-requests", str(self.remaining).encode()),
            (b"x-ratelimit-reset-requests", openai_duration(self.reset_s).encode()),
        ]


def whole_seconds(seconds: float) -> int:
    """Retry-After: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`; under a second `250ms`; zero `0s`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    total = math.ceil(seconds - 1e-9)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def decide(stamps: list[float] | deque[float], limit: int, now: float, admitted: bool) -> Decision:
    """Build the Decision from the window's stamps (oldest first) after the admission attempt."""
    count = len(stamps)
    reset = stamps[-1] + WINDOW_S - now if count else 0.0
    retry = 0.0 if admitted else max(0.0, stamps[0] + WINDOW_S - now) if count else 0.0
    return Decision(admitted, limit, max(0, limit - count), max(0.0, reset), retry)


class SlidingWindowLimiter:
    """In-process limiter; pure (the caller passes `now`), not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}
        self._since_sweep = 0

    def acquire(self, user_id: str, limit: int, now: float) -> Decision:
        log = self._logs.get(user_id)
        if log is None:
            log = self._logs[user_id] = deque()
            self._maybe_sweep(now)
        horizon = now - WINDOW_S
        while log and log[0] <= horizon:
            log.popleft()
        while len(log) > limit:  # the limit was lowered: forget the oldest surplus
            log.popleft()
        admitted = len(log) < limit
        if admitted:
            log.append(now)
        return decide(log, limit, now, admitted)

    def _maybe_sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < _SWEEP_EVERY:
            return
        self._since_sweep = 0
        horizon = now - WINDOW_S
        for user in [u for u, log in self._logs.items() if not log or log[-1] <= horizon]:
            del self._logs[user]

    def __len__(self) -> int:
        return len(self._logs)
