"""Request-rate windows and the OpenAI `x-ratelimit-*` / `Retry-After` headers the fake sends."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

UNLIMITED_REQUESTS = 1_000_000
UNLIMITED_TOKENS = 10_000_000


class SlidingWindow:
    """A sliding log: never more than `limit` accepted requests in any `period`-second interval.

    A fractional rate below 1 per window becomes 1 request per `period / rate` seconds, so
    `rps=0.5` means one request every 2 s.
    """

    __slots__ = ("_stamps", "limit", "period")

    def __init__(self, rate: float, seconds: float) -> None:
        if rate >= 1:
            self.limit, self.period = int(rate), seconds
        else:
            self.limit, self.period = 1, seconds / rate
        self._stamps: deque[float] = deque()

    def _expire(self, now: float) -> None:
        stamps, horizon = self._stamps, now - self.period
        while stamps and stamps[0] <= horizon:
            stamps.popleft()

    def remaining(self, now: float) -> int:
        self._expire(now)
        return self.limit - len(self._stamps)

    def reset_after(self, now: float) -> float:
        """Seconds until the oldest request in the window expires (0 when the window is empty)."""
        self._expire(now)
        return self._stamps[0] + self.period - now if self._stamps else 0.0

    def add(self, now: float) -> None:
        self._stamps.append(now)

    def clear(self) -> None:
        self._stamps.clear()


class KeyLimiter:
    """The rps and rpm windows of one key; a request is accepted only if every window has room."""

    __slots__ = ("windows",)

    def __init__(self, rps: float | None, rpm: float | None) -> None:
        self.windows = [
            SlidingWindow(rate, seconds)
            for rate, seconds in ((rps, 1.0), (rpm, 60.0))
            if rate is not None
        ]

    def try_acquire(self, now: float) -> bool:
        if any(w.remaining(now) <= 0 for w in self.windows):
            return False
        for window in self.windows:
            window.add(now)
        return True

    def status(self, now: float) -> tuple[int, int, float]:
        """(limit, remaining, reset seconds) of the tightest window, for the headers."""
        if not self.windows:
            return UNLIMITED_REQUESTS, UNLIMITED_REQUESTS - 1, 0.0
        tightest = min(self.windows, key=lambda w: (w.remaining(now), -w.reset_after(now)))
        return tightest.limit, tightest.remaining(now), tightest.reset_after(now)

    def clear(self) -> None:
        for window in self.windows:
            window.clear()


def full_limiter(limiters: Sequence[KeyLimiter], now: float) -> KeyLimiter | None:
    """Take one request from every limiter, or from none: the first full one, else None."""
    for limiter in limiters:
        if any(w.remaining(now) <= 0 for w in limiter.windows):
            return limiter
    for limiter in limiters:
        limiter.try_acquire(now)
    return None


def tightest_status(limiters: Sequence[KeyLimiter], now: float) -> tuple[int, int, float]:
    """(limit, remaining, reset seconds) of the tightest window of all `limiters`."""
    statuses = [limiter.status(now) for limiter in limiters]
    return min(statuses, key=lambda s: (s[1], -s[2]))


def format_duration(seconds: float) -> str:
    """Render a reset time the way OpenAI does: `250ms`, `1s`, `1.5s`, `1m30s`."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


def rate_headers(limit: int, remaining: int, reset_s: float) -> dict[str, str]:
    """The six `x-ratelimit-*` headers; tokens are never limited by the fake."""
    return {
        "x-ratelimit-limit-requests": str(limit),
        "x-ratelimit-remaining-requests": str(max(0, remaining)),
        "x-ratelimit-reset-requests": format_duration(reset_s),
        "x-ratelimit-limit-tokens": str(UNLIMITED_TOKENS),
        "x-ratelimit-remaining-tokens": str(UNLIMITED_TOKENS),
        "x-ratelimit-reset-tokens": "0s",
    }


def retry_headers(reset_s: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (ceil, min 1) and `retry-after-ms`."""
    return {
        "retry-after": str(max(1, math.ceil(reset_s))),
        "retry-after-ms": str(max(1, math.ceil(reset_s * 1000))),
    }
