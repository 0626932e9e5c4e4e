"""The per-user limiter (one-second buckets over a 60-s window), driven by an explicit clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.access.ratelimit import SlidingWindowLimiter, openai_duration, whole_seconds


def test_admits_rpm_then_refuses_with_the_wait_until_the_oldest_expires():
    limiter = SlidingWindowLimiter()
    for i in range(5):
        decision = limiter.acquire("u", 5, 100.0 + i)
        assert decision.allowed
        assert decision.remaining == 4 - i

    refused = limiter.acquire("u", 5, 110.0)
    assert not refused.allowed
    # the first admission (bucket 100..101) stops counting when bucket 161 starts
    assert refused.retry_after_s == 51.0
    assert whole_seconds(refused.retry_after_s) == 51

    assert not limiter.acquire("u", 5, 160.9).allowed
    assert limiter.acquire("u", 5, 161.0).allowed
    assert not limiter.acquire("u", 5, 161.5).allowed


def test_users_are_limited_separately():
    limiter = SlidingWindowLimiter()
    assert limiter.acquire("a", 1, 0.0).allowed
    assert not limiter.acquire("a", 1, 1.0).allowed
    assert limiter.acquire("b", 1, 1.0).allowed


def test_headers_use_openai_names_and_formats():
    limiter = SlidingWindowLimiter()
    decision = limiter.acquire("u", 30, 0.0)
    headers = dict(decision.headers())
    assert headers[b"x-ratelimit-limit-requests"] == b"30"
    assert headers[b"x-ratelimit-remaining-requests"] == b"29"
    assert headers[b"x-ratelimit-reset-requests"] == b"1m1s"  # empty again at 61 s


def test_openai_duration_format():
    assert openai_duration(0) == "0s"
    assert openai_duration(0.25) == "250ms"
    assert openai_duration(1) == "1s"
    assert openai_duration(1.2) == "2s"
    assert openai_duration(360) == "6m0s"
    assert openai_duration(3723) == "1h2m3s"


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    assert whole_seconds(0.01) == 1
    assert whole_seconds(1.0) == 1
    assert whole_seconds(1.2) == 2


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=8),
    gaps=st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=120),
)
def test_never_more_than_rpm_admitted_in_any_60_second_window(rpm: int, gaps: list[float]):
    limiter = SlidingWindowLimiter()
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.acquire("u", rpm, now).allowed:
            admitted.append(now)
    for i, start in enumerate(admitted):
        inside = [t for t in admitted[i:] if t < start + 60]
        assert len(inside) <= rpm


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=8),
    gaps=st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), max_size=120),
)
def test_a_refusal_means_rpm_admissions_in_the_last_61_seconds(rpm: int, gaps: list[float]):
    """The buckets cost at most one second: nobody waits for a request older than 61 s."""
    limiter = SlidingWindowLimiter()
    now, admitted = 1000.0, []
    for gap in gaps:
        now += gap
        if limiter.acquire("u", rpm, now).allowed:
            admitted.append(now)
        else:
            assert sum(1 for t in admitted if t > now - 61) >= rpm


@settings(max_examples=200, deadline=None)
@given(
    rpm=st.integers(min_value=1, max_value=6),
    gaps=st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=40),
)
def test_retry_after_is_exactly_when_the_next_request_gets_in(rpm: int, gaps: list[float]):
    limiter = SlidingWindowLimiter()
    now = 500.0
    for gap in gaps:
        now += gap
        limiter.acquire("u", rpm, now)
    refused = limiter.acquire("u", rpm, now)
    if refused.allowed:
        return
    probe = SlidingWindowLimiter()  # the same history, asked just before and at the retry time
    now = 500.0
    for gap in gaps:
        now += gap
        probe.acquire("u", rpm, now)
    assert not probe.acquire("u", rpm, now + refused.retry_after_s - 0.01).allowed
    assert probe.acquire("u", rpm, now + refused.retry_after_s).allowed


def test_a_lowered_limit_applies_at_once_and_frees_up_as_the_old_requests_leave():
    limiter = SlidingWindowLimiter()
    for i in range(10):
        assert limiter.acquire("u", 100, 10.0 + i).allowed
    refused = limiter.acquire("u", 3, 20.0)
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_s == 78 - 20.0  # 8 of 10 must leave: the one at 17 leaves at 78
    assert limiter.acquire("u", 3, 78.0).allowed


def test_a_busy_user_with_a_huge_limit_is_counted_exactly():
    limiter = SlidingWindowLimiter()
    now = 0.0
    for _ in range(120_000):  # 1,000 a second for two minutes
        now += 0.001
        decision = limiter.acquire("u", 10_000_000, now)
    assert decision.allowed
    assert 60_000 <= 10_000_000 - decision.remaining <= 61_000  # the last 60 to 61 seconds
