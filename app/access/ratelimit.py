"""Per-user request limits: never more than `rpm` admissions in any 60-second window.

One-second buckets, not a log of every admission: a request is admitted while its user's
admissions in the current bucket and the 60 before it number fewer than `rpm`. Any 60-s window
lies inside those 61 buckets of its last admission, so it never holds more than `rpm`; the
price is that an admission frees its slot 60 to 61 s later (a log frees it after exactly 60 s).
In exchange a user costs at most 61 counters, whatever the limit (a log holds `rpm` stamps:
100k floats for a busy user with a huge limit), and each check is O(1) amortised; the Redis
limiter keeps the same buckets in one hash (`redis_limiter.py`).

Not GCRA: GCRA with a burst of `rpm` lets rpm+1 requests into some 60-s window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

WINDOW_S = 60.0
BUCKET_S = 1.0
BUCKETS = 60  # WINDOW_S / BUCKET_S: buckets before the current one that still count
_SWEEP_EVERY = 4096  # new users between sweeps of idle ones

_LIMIT = b"x-ratelimit-limit-requests"
_REMAINING = b"x-ratelimit-remaining-requests"
_RESET = b"x-ratelimit-reset-requests"


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
            (_LIMIT, _digits(self.limit)),
            (_REMAINING, _digits(self.remaining)),
            (_RESET, openai_duration(self.reset_s).encode()),
        ]


@lru_cache(maxsize=1024)
def _digits(n: int) -> bytes:
    return str(n).encode()


def whole_seconds(seconds: float) -> int:
    """Retry-After: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`; under a second `250ms`; zero `0s`."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    return _whole_duration(math.ceil(seconds - 1e-9))


@lru_cache(maxsize=256)
def _whole_duration(total: int) -> str:
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def bucket_of(now: float) -> int:
    return math.floor(now / BUCKET_S)


def leaves_at(bucket: int) -> float:
    """When an admission counted in `bucket` stops counting: BUCKETS whole buckets later."""
    return (bucket + BUCKETS + 1) * BUCKET_S


def decide(
    buckets: Sequence[Sequence[int]],
    total: int,
    limit: int,
    now: float,
    admitted: bool,
) -> Decision:
    """The Decision from the counted buckets (oldest first, `total` admissions in them) after
    the attempt; walks them only for a refusal, to find when enough have left."""
    if total <= 0:
        return Decision(admitted, limit, limit, 0.0, 0.0)
    remaining = max(0, limit - total)
    reset = max(0.0, leaves_at(buckets[-1][0]) - now)
    if admitted:
        return Decision(True, limit, remaining, reset, 0.0)
    must_leave = total - limit + 1  # admissions that must stop counting before the next
    left = 0
    for bucket, count in buckets:
        left += count
        if left >= must_leave:
            return Decision(False, limit, remaining, reset, max(0.0, leaves_at(bucket) - now))
    return Decision(False, limit, remaining, reset, reset)


class _Window:
    """One user's non-empty buckets, oldest first, as [bucket, count], and their sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque()
        self.total = 0


class SlidingWindowLimiter:
    """In-process limiter; pure (the caller passes `now`), not thread-safe (one event loop)."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._since_sweep = 0

    def acquire(self, user_id: str, limit: int, now: float) -> Decision:
        window = self._windows.get(user_id)
        if window is None:
            window = self._windows[user_id] = _Window()
            self._maybe_sweep(now)
        current = bucket_of(now)
        buckets = window.buckets
        oldest = current - BUCKETS
        while buckets and buckets[0][0] < oldest:
            window.total -= buckets.popleft()[1]
        if window.total >= limit:
            return decide(buckets, window.total, limit, now, False)
        window.total += 1
        if buckets and buckets[-1][0] >= current:  # this bucket (or the clock went back)
            newest = buckets[-1]
            newest[1] += 1
        else:
            newest = [current, 1]
            buckets.append(newest)
        # decide()'s answer for an admission, without its walk: this runs on every request
        reset = leaves_at(newest[0]) - now
        return Decision(True, limit, max(0, limit - window.total), max(0.0, reset), 0.0)

    def _maybe_sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < _SWEEP_EVERY:
            return
        self._since_sweep = 0
        oldest = bucket_of(now) - BUCKETS
        idle = [u for u, w in self._windows.items() if not w.buckets or w.buckets[-1][0] < oldest]
        for user in idle:
            del self._windows[user]

    def __len__(self) -> int:
        return len(self._windows)
