"""The per-user sliding-window limiter, driven by an explicit clock."""

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
    assert refused.retry_after_s == 50.0  # first admission at 100 leaves the window at 160
    assert whole_seconds(refused.retry_after_s) == 50

    assert limiter.acquire("u", 5, 160.0).allowed
    assert not limiter.acquire("u", 5, 160.5).allowed


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
    assert headers[b"x-ratelimit-reset-requests"] == b"1m0s"


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
