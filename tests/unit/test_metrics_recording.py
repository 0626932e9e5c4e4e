"""Recording straight into the label children's values gives what the library's own calls give."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.metrics import LATENCY_BUCKETS, Metrics

SECONDS = (0.001, 0.005, 0.0051, 0.3, 2.5, 7.0, 200.0)  # on a bound, between, past the last


def samples(text: bytes, family: str) -> list[str]:
    return [
        line
        for line in text.decode().splitlines()
        if line.startswith(family) and "_created" not in line
    ]


def test_requests_and_durations_match_the_library():
    metrics = Metrics()
    registry = CollectorRegistry()
    requests = Counter("keypool_requests", "x", ["route", "path", "provider", "status"],
                       registry=registry)  # fmt: skip
    duration = Histogram("keypool_request_duration_seconds", "x", ["route"],
                         buckets=LATENCY_BUCKETS, registry=registry)  # fmt: skip
    for seconds in SECONDS:
        metrics.observe_request("/api/chat", "B", "fake", 200, seconds)
        requests.labels("/api/chat", "B", "fake", "200").inc()
        duration.labels("/api/chat").observe(seconds)
    ours, theirs = generate_latest(metrics.registry), generate_latest(registry)
    for family in ("keypool_requests_total", "keypool_request_duration_seconds"):
        assert samples(ours, family) == samples(theirs, family)
    assert 'keypool_request_duration_seconds_bucket{le="0.005",route="/api/chat"} 2.0' in (
        ours.decode()
    )


def test_counters_add_their_amounts():
    metrics = Metrics()
    metrics.add_cost("fake", 0.25)
    metrics.add_cost("fake", 0.5)
    metrics.count_cache("hit")
    metrics.count_cache("hit")
    text = generate_latest(metrics.registry).decode()
    assert 'keypool_cost_usd_total{provider="fake"} 0.75' in text
    assert 'keypool_cache_requests_total{result="hit"} 2.0' in text
