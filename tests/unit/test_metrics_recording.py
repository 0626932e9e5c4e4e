"""Recording straight into the label children's values gives what the library's own calls give."""

from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.metrics import LATENCY_BUCKETS, Metrics
from app.usage import UsageEvent

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
    metrics.fold()
    ours, theirs = generate_latest(metrics.registry), generate_latest(registry)
    for family in ("keypool_requests_total", "keypool_request_duration_seconds"):
        assert samples(ours, family) == samples(theirs, family)
    assert 'keypool_request_duration_seconds_bucket{le="0.005",route="/api/chat"} 2.0' in (
        ours.decode()
    )


def test_an_attempt_counts_its_tokens_and_its_duration():
    metrics = Metrics()
    event = UsageEvent("fake", 0, "fake:0:ab", None, prompt_tokens=3, completion_tokens=4,
                       outcome="ok", seconds=0.03)  # fmt: skip
    metrics.observe(event)
    metrics.observe(replace(event, seconds=None))  # a duration unknown: counted, not timed
    metrics.fold()
    text = generate_latest(metrics.registry).decode()
    assert (
        'keypool_upstream_attempts_total{key="fake:0:ab",provider="fake",result="ok"} 2.0' in text
    )
    assert 'keypool_tokens_total{kind="completion",provider="fake"} 8.0' in text
    assert 'keypool_upstream_duration_seconds_count{provider="fake"} 1.0' in text
    assert 'keypool_upstream_duration_seconds_bucket{le="0.05",provider="fake"} 1.0' in text


def test_counters_add_their_amounts():
    metrics = Metrics()
    metrics.add_cost("fake", 0.25)
    metrics.add_cost("fake", 0.5)
    metrics.observe_request("/api/chat", "B", "fake", 200, 0.02, "hit")
    metrics.observe_request("/api/chat", "B", "fake", 200, 0.02, "hit")
    metrics.fold()
    text = generate_latest(metrics.registry).decode()
    assert 'keypool_cost_usd_total{provider="fake"} 0.75' in text
    assert 'keypool_cache_requests_total{result="hit"} 2.0' in text


def test_recordings_reach_the_library_summed_at_each_fold():
    metrics = Metrics()
    for _ in range(3):
        metrics.observe_request("/api/chat", "B", "fake", 200, 0.02)
    series = 'keypool_requests_total{path="B",provider="fake",route="/api/chat",status="200"}'
    assert f"{series} 0.0" in generate_latest(metrics.registry).decode()
    metrics.fold()
    metrics.observe_request("/api/chat", "B", "fake", 200, 0.02)
    metrics.fold()
    metrics.fold()  # nothing new: nothing added twice
    text = generate_latest(metrics.registry).decode()
    assert f"{series} 4.0" in text
    assert 'keypool_request_duration_seconds_count{route="/api/chat"} 4.0' in text


def test_a_request_counts_its_cache_result_with_it():
    metrics = Metrics()
    metrics.observe_request("/api/chat", "B", "fake", 200, 0.02, "hit")
    metrics.observe_request("/api/chat", "B", "fake", 200, 0.02, "miss")
    metrics.observe_request("/api/chat", "B", "fake", 200, 0.02)  # no cache in the way
    metrics.fold()
    text = generate_latest(metrics.registry).decode()
    assert 'keypool_cache_requests_total{result="hit"} 1.0' in text
    assert 'keypool_cache_requests_total{result="miss"} 1.0' in text
    assert (
        'keypool_requests_total{path="B",provider="fake",route="/api/chat",status="200"} 3.0'
        in (text)
    )
