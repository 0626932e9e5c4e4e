"""A bounded rolling summary of chat requests: per-minute buckets of log-spaced histograms.

Memory is bounded by design: at most 1,440 minute buckets (24 h), each holding sparse
histogram counts over a fixed set of latency bounds, never a list of requests. Percentiles
are read from the merged buckets of a window, so they carry the bounds' ~10% resolution.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

WINDOWS = {"5m": 5, "1h": 60, "24h": 1440}
RETENTION_MINUTES = 1440
# Log-spaced upper bounds in ms, 0.5 ms to ~10 min, each ~10% above the last.
BOUNDS: tuple[float, ...] = tuple(0.5 * 1.1**i for i in range(int(math.log(1_200_000, 1.1)) + 1))


class LatencyHistogram:
    """Sparse counts per bound index; the value read back is the bucket's upper bound."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, value_ms: float) -> None:
        index = bisect.bisect_left(BOUNDS, value_ms)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.total += other.total

    def percentile(self, q: float) -> float | None:
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return round(BOUNDS[min(index, len(BOUNDS) - 1)], 2)
        return round(BOUNDS[-1], 2)  # pragma: no cover - rank never exceeds total

    def percentiles(self) -> dict[str, float | None]:
        return {
            "p50": self.percentile(0.5),
            "p95": self.percentile(0.95),
            "p99": self.percentile(0.99),
        }


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one finished chat request contributes to the summary (no user, no key material)."""

    route: str
    status: int
    latency_ms: float
    provider: str | None = None
    ttft_ms: float | None = None
    error_type: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    cache: str | None = None  # "hit", "miss", "bypass" or None when unknown

    @property
    def failed(self) -> bool:
        return self.status >= 400


@dataclass(slots=True)
class _ProviderTally:
    requests: int = 0
    errors: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)


@dataclass(slots=True)
class _Minute:
    """Everything recorded in one wall-clock minute."""

    minute: int
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    cache_lookups: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    ttft: LatencyHistogram = field(default_factory=LatencyHistogram)
    errors_by_type: Counter[str] = field(default_factory=Counter)
    providers: dict[str, _ProviderTally] = field(default_factory=dict)

    def add(
        self,
        status: int,
        latency_ms: float,
        provider: str | None,
        ttft_ms: float | None,
        error_type: str | None,
        tokens: int,
        cost_usd: float,
        cache: str | None,
    ) -> None:
        self.requests += 1
        self.tokens += tokens
        self.cost_usd += cost_usd
        self.latency.add(latency_ms)
        if ttft_ms is not None:
            self.ttft.add(ttft_ms)
        if cache == "hit" or cache == "miss":
            self.cache_lookups += 1
            self.cache_hits += cache == "hit"
        failed = status >= 400
        if failed:
            self.errors += 1
            self.errors_by_type[error_type or f"http_{status}"] += 1
        if provider:
            tally = self.providers.get(provider)
            if tally is None:
                tally = self.providers[provider] = _ProviderTally()
            tally.requests += 1
            tally.errors += failed
            tally.latency.add(latency_ms)

    def merge(self, other: _Minute) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.tokens += other.tokens
        self.cost_usd += other.cost_usd
        self.cache_hits += other.cache_hits
        self.cache_lookups += other.cache_lookups
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        self.errors_by_type.update(other.errors_by_type)
        for name, tally in other.providers.items():
            mine = self.providers.setdefault(name, _ProviderTally())
            mine.requests += tally.requests
            mine.errors += tally.errors
            mine.latency.merge(tally.latency)


class RollingSummary:
    """Records requests into the current minute; `summary(window)` merges the last minutes."""

    def __init__(
        self, clock: Callable[[], float] = time.time, retention_minutes: int = RETENTION_MINUTES
    ) -> None:
        self.clock = clock
        self._minutes: deque[_Minute] = deque(maxlen=retention_minutes)

    def record(self, record: RequestRecord) -> None:
        self._current().add(
            record.status,
            record.latency_ms,
            record.provider,
            record.ttft_ms,
            record.error_type,
            record.tokens,
            record.cost_usd,
            record.cache,
        )

    def add_request(
        self,
        status: int,
        latency_ms: float,
        provider: str | None,
        ttft_ms: float | None = None,
        error_type: str | None = None,
        cost_usd: float = 0.0,
        cache: str | None = None,
    ) -> None:
        """`record` without building a RequestRecord (the per-request path)."""
        self._current().add(status, latency_ms, provider, ttft_ms, error_type, 0, cost_usd, cache)

    def add_tokens(self, tokens: int) -> None:
        """Tokens of a settled upstream attempt (fed by the usage sink, not per request)."""
        if tokens:
            self._current().tokens += tokens

    def _current(self) -> _Minute:
        minute = int(self.clock() // 60)
        if not self._minutes or self._minutes[-1].minute != minute:
            self._minutes.append(_Minute(minute))
        return self._minutes[-1]

    def summary(self, window: str) -> dict[str, Any]:
        """The admin summary for `window` (one of WINDOWS); raises KeyError for another."""
        span = WINDOWS[window]
        first = int(self.clock() // 60) - span + 1
        total = _Minute(first)
        for bucket in self._recent(first):
            total.merge(bucket)
        return _render(window, total)

    def series(self, minutes: int) -> list[dict[str, Any]]:
        """Per-minute requests, errors and latency p50/p95 for the last `minutes` (oldest first;
        a minute without requests is listed with zeros, so the x axis is time)."""
        now_minute = int(self.clock() // 60)
        first = now_minute - min(minutes, RETENTION_MINUTES) + 1
        by_minute = {bucket.minute: bucket for bucket in self._recent(first)}
        points = []
        for minute in range(first, now_minute + 1):
            bucket = by_minute.get(minute) or _Minute(minute)
            latency = bucket.latency
            points.append(
                {
                    "at": _iso_minute(minute),
                    "requests": bucket.requests,
                    "errors": bucket.errors,
                    "latency_ms": {"p50": latency.percentile(0.5), "p95": latency.percentile(0.95)},
                }
            )
        return points

    def _recent(self, first_minute: int) -> Iterable[_Minute]:
        for bucket in reversed(self._minutes):
            if bucket.minute < first_minute:
                return
            yield bucket


def _iso_minute(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).isoformat().replace("+00:00", "Z")


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def _render(window: str, total: _Minute) -> dict[str, Any]:
    providers = [
        {
            "name": name,
            "requests": tally.requests,
            "errors": tally.errors,
            "latency_ms": tally.latency.percentiles(),
        }
        for name, tally in sorted(total.providers.items())
    ]
    return {
        "window": window,
        "requests": total.requests,
        "success_rate": _ratio(total.requests - total.errors, total.requests),
        "error_rate": _ratio(total.errors, total.requests),
        "latency_ms": total.latency.percentiles(),
        "ttft_ms": total.ttft.percentiles(),
        "errors_by_type": dict(total.errors_by_type.most_common()),
        "tokens": total.tokens,
        "cost_usd": round(total.cost_usd, 6),
        "cache_hit_rate": _ratio(total.cache_hits, total.cache_lookups),
        "providers": providers,
    }


@dataclass(frozen=True, slots=True)
class ErrorEntry:
    at: str
    request_id: str | None
    route: str
    status: int
    type: str
    message: str
    provider: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "request_id": self.request_id,
            "route": self.route,
            "status": self.status,
            "type": self.type,
            "message": self.message,
            "provider": self.provider,
        }


class RecentErrors:
    """The last `size` failed requests, newest first, for the dashboard."""

    def __init__(self, size: int = 50) -> None:
        self._entries: deque[ErrorEntry] = deque(maxlen=size)

    def add(self, entry: ErrorEntry) -> None:
        self._entries.append(entry)

    def latest(self) -> list[dict[str, Any]]:
        return [e.as_dict() for e in reversed(self._entries)]
