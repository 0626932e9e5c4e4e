"""Parse the rate-limit signals providers send: Retry-After, retry-after-ms, x-ratelimit-*."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from functools import lru_cache

from app.keys.model import NO_SIGNAL, RateLimitSignal

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

RATE_LIMIT_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


@lru_cache(maxsize=4096)
def parse_duration(value: str) -> float | None:
    """`1m30s`, `250ms`, `6.5s`, `2h`, or bare seconds (`12`, `0.5`) → seconds; None if unparseable.

    Non-finite values (`inf`, `nan`, `1e400`) are unparseable: one bad header must not cool a
    key forever.
    """
    text = value.strip().lower()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    total = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return total if math.isfinite(total) else None  # "999…9s" past float range is inf


def parse_retry_after(value: str, now: float) -> float | None:
    """Retry-After is seconds or an HTTP date (RFC 9110); returns seconds from `now`."""
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


def parse_signal(headers: Mapping[str, str], now: float) -> RateLimitSignal:
    """Read the lower-cased rate-limit headers of one response."""
    if not headers:
        return NO_SIGNAL
    retry_after = None
    if "retry-after-ms" in headers:
        ms = _int(headers["retry-after-ms"])
        retry_after = max(0, ms) / 1000 if ms is not None else None
    if retry_after is None and "retry-after" in headers:
        retry_after = parse_retry_after(headers["retry-after"], now)
    return RateLimitSignal(
        retry_after_s=retry_after,
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_requests_s=_duration(headers.get("x-ratelimit-reset-requests")),
        reset_tokens_s=_duration(headers.get("x-ratelimit-reset-tokens")),
        limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
        limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
    )


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except (ValueError, OverflowError):  # int(inf) overflows, int(nan) is a ValueError
        return None


def _duration(value: str | None) -> float | None:
    return parse_duration(value) if value is not None else None
