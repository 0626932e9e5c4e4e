"""Learned limits: the per-key budgets a provider announces in `x-ratelimit-*` headers.

A provider that sends `x-ratelimit-limit-requests: L` and `x-ratelimit-reset-requests` announces
a budget of L per some window W, without naming W (OpenAI's requests are per minute, Groq's per
day, their tokens per minute). Providers refill continuously, and the reset is the time until
the bucket is full again, so the `L - remaining` units used refill in `reset` seconds:
W ≈ L · reset / (L - remaining). Sliding logs and fixed windows announce instead when their
oldest unit frees up, which overstates W for a lightly used key, so a usual window (1 s, 1 min,
1 h, 1 day) between the reset and that estimate is preferred; otherwise the estimate is snapped
to the nearest usual window, because in-flight requests blur `remaining`. With nothing used yet (or no
`remaining` header) the reset alone bounds W from below, and the shortest usual window at least
as long as it is taken: the only safe reading of "resets within W".

The pacer then treats L per W exactly like a configured budget; a configured value always wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from app.keys.model import KeyStatus, RateLimitSignal
from app.keys.pacing import Pace

USUAL_WINDOWS_S = (1.0, 60.0, 3600.0, 86400.0)
# Resets are rounded up when rendered (`1.001s`, whole-second Retry-After): a little slack.
FIT_TOLERANCE = 1.05
LimitSource = Literal["config", "learned"]


@dataclass(frozen=True, slots=True)
class LearnedLimit:
    """L units per `window_s` seconds, as one response announced them."""

    limit: int
    window_s: float

    @property
    def per_minute(self) -> float:
        """The same rate over 60 s: what `<P>_RPM_PER_KEY` / `<P>_TPM_PER_KEY` would say."""
        return self.limit * 60.0 / self.window_s

    @property
    def interval_s(self) -> float:
        """Seconds between evenly spread units (the GCRA emission interval before headroom)."""
        return self.window_s / self.limit


@dataclass(frozen=True, slots=True)
class LearnedLimits:
    """One key's learned request and token budgets (None: never announced)."""

    requests: LearnedLimit | None = None
    tokens: LearnedLimit | None = None


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """What the pacer uses and health shows: per-60-s budgets and where they came from.

    Budgets are exact (a learned 100 per day is 0.0694 per minute); `Pace(rpm=…, tpm=…)`
    accepts them as they are, since it only ever divides by them.
    """

    rpm: float | None
    tpm: float | None
    source: LimitSource | None

    def as_dict(self) -> dict[str, object]:
        """The health key entry's `limits` object (whole numbers from 1 up)."""
        return {"rpm": _shown(self.rpm), "tpm": _shown(self.tpm), "source": self.source}


def _shown(value: float | None) -> float | int | None:
    if value is None:
        return None
    return math.floor(value) if value >= 1 else round(value, 4)


def infer_window(limit: int, remaining: int | None, reset_s: float) -> float | None:
    """The window W of a budget `limit` from one response (see the module docstring)."""
    if limit <= 0 or not math.isfinite(reset_s) or reset_s <= 0:
        return None
    if remaining is not None and 0 <= remaining < limit:
        raw = limit * reset_s / (limit - remaining)
        # A sliding log or fixed window announces only when its *oldest* unit frees up, so a
        # lightly used key (1 of 20 used, reset 1 s) reads as 20 s. The reset never exceeds the
        # window and the proportion never falls short of it, so a usual window within
        # [reset, raw] fits both readings: take the longest such (the cautious one).
        fitting = [
            w for w in USUAL_WINDOWS_S if reset_s <= w * FIT_TOLERANCE and w <= raw * FIT_TOLERANCE
        ]
        if fitting:
            return fitting[-1]
        return min(USUAL_WINDOWS_S, key=lambda w: abs(math.log(raw / w)))
    return next((w for w in USUAL_WINDOWS_S if w >= reset_s), None)


def learn_one(
    previous: LearnedLimit | None, limit: int | None, remaining: int | None, reset_s: float | None
) -> LearnedLimit | None:
    """The new estimate for one dimension, or the previous one when this response says nothing.

    A response that repeats the limit without a usable reset keeps the known window, so an
    idle key (remaining == limit, reset 0) does not forget what a busy one taught.
    """
    if limit is None or limit <= 0:
        return previous
    window = infer_window(limit, remaining, reset_s) if reset_s is not None else None
    if window is None:
        if previous is None:
            return None
        window = previous.window_s
    return LearnedLimit(limit, window)


def learn(previous: LearnedLimits, signal: RateLimitSignal) -> LearnedLimits:
    """Fold one successful response's headers into a key's learned limits."""
    requests = learn_one(
        previous.requests,
        signal.limit_requests,
        signal.remaining_requests,
        signal.reset_requests_s,
    )
    tokens = learn_one(
        previous.tokens, signal.limit_tokens, signal.remaining_tokens, signal.reset_tokens_s
    )
    if requests == previous.requests and tokens == previous.tokens:
        return previous  # the common case: no allocation, and identity tells "unchanged"
    return LearnedLimits(requests, tokens)


def effective_limits(
    configured_rpm: float | None, configured_tpm: float | None, learned: LearnedLimits
) -> EffectiveLimits:
    """Configured values win per dimension; learned ones fill the gaps.

    `source` is "learned" when any shown value was learned, "config" when all came from the
    configuration, null when the key is not paced at all.
    """
    rpm: float | None = configured_rpm
    tpm: float | None = configured_tpm
    source: LimitSource | None = "config" if rpm or tpm else None
    if rpm is None and learned.requests is not None:
        rpm, source = learned.requests.per_minute, "learned"
    if tpm is None and learned.tokens is not None:
        tpm, source = learned.tokens.per_minute, "learned"
    return EffectiveLimits(rpm, tpm, source)


def pace_with(configured: Pace, learned: LearnedLimits) -> Pace:
    """The Pace one key should use: the provider's configured budgets, gaps filled by what this
    key learned, the process share kept. Returns `configured` itself when nothing changes."""
    limits = effective_limits(configured.rpm, configured.tpm, learned)
    if (limits.rpm, limits.tpm) == (configured.rpm, configured.tpm):
        return configured
    return Pace(limits.rpm, limits.tpm, configured.share, _burst(configured, limits.rpm))


def has_learned(status: KeyStatus) -> bool:
    """Whether the key learned any limit (it is paced by it where nothing is configured)."""
    return status.learned_requests is not None or status.learned_tokens is not None


def learned_of(status: KeyStatus) -> LearnedLimits:
    """A key's learned limits as its record keeps them (flat fields, so Redis stores them too)."""
    return LearnedLimits(
        _limit(status.learned_requests, status.learned_requests_window),
        _limit(status.learned_tokens, status.learned_tokens_window),
    )


def _limit(limit: int | None, window: float | None) -> LearnedLimit | None:
    return LearnedLimit(limit, window) if limit is not None and window is not None else None


def learn_into(status: KeyStatus, signal: RateLimitSignal) -> None:
    """Fold one successful answer's announced limits into the key's record."""
    if signal.limit_requests is None and signal.limit_tokens is None:
        return  # most answers of most providers: nothing to learn
    learned = learn(learned_of(status), signal)
    if learned.requests is not None:
        status.learned_requests = learned.requests.limit
        status.learned_requests_window = learned.requests.window_s
    if learned.tokens is not None:
        status.learned_tokens = learned.tokens.limit
        status.learned_tokens_window = learned.tokens.window_s


def pace_of(configured: Pace, status: KeyStatus, split: int = 1) -> Pace:
    """The Pace of one key: `configured`, gaps filled by what the key learned (fast when none).

    `split` > 1 when the provider's limit is account-wide: what a key announces is then the
    account's budget, shared by `split` keys, so each learned dimension is divided by it.
    """
    if not has_learned(status):
        return configured
    limits = effective_limits(configured.rpm, configured.tpm, learned_of(status))
    rpm, tpm = limits.rpm, limits.tpm
    if split > 1:
        if configured.rpm is None and rpm is not None:
            rpm = rpm / split
        if configured.tpm is None and tpm is not None:
            tpm = tpm / split
    if (rpm, tpm) == (configured.rpm, configured.tpm):
        return configured
    return Pace(rpm, tpm, configured.share, _burst(configured, rpm))


def _burst(configured: Pace, rpm: float | None) -> int:
    """The configured burst goes with the configured rate only; a learned rate is spaced."""
    return configured.burst if rpm == configured.rpm else 1


def announced_windows(signal: RateLimitSignal) -> dict[str, list[float | int | None]]:
    """What one successful answer teaches, for the Redis script: per dimension [limit, window]
    (window None: keep the known one), as `learn_one` reads it. Empty when nothing is announced."""
    out: dict[str, list[float | int | None]] = {}
    for name, limit, remaining, reset in (
        ("requests", signal.limit_requests, signal.remaining_requests, signal.reset_requests_s),
        ("tokens", signal.limit_tokens, signal.remaining_tokens, signal.reset_tokens_s),
    ):
        if limit is None or limit <= 0:
            continue
        window = infer_window(limit, remaining, reset) if reset is not None else None
        out[name] = [limit, window]
    return out
