"""RollingSummary: windows, percentiles from bounded histograms, errors, cache, providers."""

from __future__ import annotations

import pytest

from app.observability.summary import (
    BOUNDS,
    RETENTION_MINUTES,
    ErrorEntry,
    LatencyHistogram,
    RecentErrors,
    RequestRecord,
    RollingSummary,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ok(latency_ms: float, provider: str = "alpha", **extra) -> RequestRecord:
    return RequestRecord("/api/chat", 200, latency_ms, provider, **extra)


class TestLatencyHistogram:
    @pytest.mark.parametrize("value", [0.3, 1.0, 7.5, 123.0, 4_000.0, 95_000.0])
    def test_a_value_reads_back_within_ten_percent(self, value: float):
        histogram = LatencyHistogram()
        histogram.add(value)
        read = histogram.percentile(0.5)
        assert read is not None
        assert value <= read <= max(value * 1.1, BOUNDS[0]) + 0.01

    def test_empty_has_no_percentiles(self):
        assert LatencyHistogram().percentiles() == {"p50": None, "p95": None, "p99": None}


class TestRollingSummary:
    def test_known_mix_gives_its_percentiles(self):
        summary = RollingSummary(Clock())
        for _ in range(90):
            summary.record(ok(10.0))
        for _ in range(9):
            summary.record(ok(200.0))
        summary.record(ok(1_000.0))
        latency = summary.summary("5m")["latency_ms"]
        assert 10.0 <= latency["p50"] <= 11.0
        assert 200.0 <= latency["p95"] <= 220.0
        assert 200.0 <= latency["p99"] <= 220.0  # 99th of 100 is still a 200 ms request

    def test_shape_and_rates(self):
        summary = RollingSummary(Clock())
        summary.record(ok(10.0, tokens=30, cost_usd=0.25, cache="miss", ttft_ms=4.0))
        summary.record(ok(12.0, "beta", cache="hit"))
        summary.record(
            RequestRecord("/v1/chat/completions", 503, 5.0, None, error_type="all_providers_failed")
        )
        summary.record(RequestRecord("/api/chat", 429, 1.0, None, error_type="rate_limited"))
        body = summary.summary("1h")
        assert set(body) == {
            "window", "requests", "success_rate", "error_rate", "latency_ms", "ttft_ms",
            "errors_by_type", "tokens", "cost_usd", "cache_hit_rate", "providers",
        }  # fmt: skip
        assert body["window"] == "1h"
        assert body["requests"] == 4
        assert body["success_rate"] == 0.5
        assert body["error_rate"] == 0.5
        assert body["errors_by_type"] == {"all_providers_failed": 1, "rate_limited": 1}
        assert body["tokens"] == 30
        assert body["cost_usd"] == 0.25
        assert body["cache_hit_rate"] == 0.5
        assert body["ttft_ms"]["p50"] is not None
        assert [(p["name"], p["requests"], p["errors"]) for p in body["providers"]] == [
            ("alpha", 1, 0),
            ("beta", 1, 0),
        ]
        assert set(body["providers"][0]["latency_ms"]) == {"p50", "p95", "p99"}

    def test_windows_see_only_their_minutes(self):
        clock = Clock()
        summary = RollingSummary(clock)
        summary.record(ok(10.0))
        clock.now += 10 * 60
        summary.record(ok(10.0))
        clock.now += 2 * 3600
        summary.record(ok(10.0))
        assert summary.summary("5m")["requests"] == 1
        assert summary.summary("1h")["requests"] == 1
        assert summary.summary("24h")["requests"] == 3
        clock.now += 25 * 3600
        assert summary.summary("24h")["requests"] == 0

    def test_memory_is_bounded_by_minutes_not_requests(self):
        clock = Clock()
        summary = RollingSummary(clock)
        for _ in range(RETENTION_MINUTES + 500):
            summary.record(ok(10.0))
            summary.record(ok(20.0))
            clock.now += 60
        assert len(summary._minutes) == RETENTION_MINUTES
        assert summary.summary("24h")["requests"] == 2 * (RETENTION_MINUTES - 1)

    def test_tokens_from_the_usage_sink_count_in_the_window(self):
        summary = RollingSummary(Clock())
        summary.add_tokens(12)
        summary.add_tokens(0)
        assert summary.summary("5m")["tokens"] == 12

    def test_unknown_window_is_refused(self):
        with pytest.raises(KeyError):
            RollingSummary(Clock()).summary("2d")


def test_recent_errors_are_bounded_and_newest_first():
    errors = RecentErrors(size=3)
    for n in range(5):
        errors.add(ErrorEntry(f"t{n}", f"r{n}", "/api/chat", 503, "all_keys_failed", "m", None))
    assert [e["request_id"] for e in errors.latest()] == ["r4", "r3", "r2"]


def test_series_lists_every_minute_oldest_first():
    clock = Clock(600_000.0)  # a whole minute
    summary = RollingSummary(clock)
    summary.record(ok(10.0))
    clock.now += 120
    summary.record(ok(100.0))
    summary.record(RequestRecord("/api/chat", 503, 5.0))
    points = summary.series(4)
    assert [p["requests"] for p in points] == [0, 1, 0, 2]
    assert [p["errors"] for p in points] == [0, 0, 0, 1]
    assert points[1]["latency_ms"]["p50"] >= 10.0
    assert points[0]["latency_ms"] == {"p50": None, "p95": None}
    assert points[-1]["at"] == "1970-01-07T22:42:00Z"
