"""Rate-limit header parsing: Retry-After, retry-after-ms and the x-ratelimit-* family."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from app.keys.model import NO_SIGNAL, RateLimitSignal
from app.keys.signals import parse_duration, parse_retry_after, parse_signal

NOW = 1_750_000_000.0


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("12", 12.0),
            ("0.5", 0.5),
            (" 7 ", 7.0),
            ("250ms", 0.25),
            ("6.5s", 6.5),
            ("1m30s", 90.0),
            ("1m0.5s", 60.5),
            ("2h", 7200.0),
            ("1h2m3s", 3723.0),
            ("-3", 0.0),
        ],
    )
    def test_openai_and_plain_durations(self, text: str, seconds: float):
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["", "soon", "1x", "1m 30s", "ms", "1m30", "s30"])
    def test_unparseable_durations_are_none(self, text: str):
        assert parse_duration(text) is None

    @pytest.mark.parametrize("text", ["inf", "nan", "1e400", "-inf"])
    def test_non_finite_durations_are_refused(self, text: str):
        assert parse_duration(text) is None


class TestRetryAfter:
    def test_seconds(self):
        assert parse_retry_after("30", NOW) == 30.0

    def test_http_date_is_relative_to_now(self):
        when = format_datetime(datetime.fromtimestamp(NOW + 42, UTC), usegmt=True)
        assert parse_retry_after(when, NOW) == pytest.approx(42.0)

    def test_a_date_in_the_past_means_now(self):
        when = format_datetime(datetime.fromtimestamp(NOW - 600, UTC), usegmt=True)
        assert parse_retry_after(when, NOW) == 0.0

    def test_garbage_is_none(self):
        assert parse_retry_after("next tuesday", NOW) is None


class TestSignal:
    def test_no_headers_no_signal(self):
        assert parse_signal({}, NOW) is NO_SIGNAL

    def test_openai_style_headers(self):
        signal = parse_signal(
            {
                "x-ratelimit-limit-requests": "30",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1m30s",
                "x-ratelimit-limit-tokens": "6000",
                "x-ratelimit-remaining-tokens": "5990",
                "x-ratelimit-reset-tokens": "100ms",
            },
            NOW,
        )
        assert signal == RateLimitSignal(
            retry_after_s=None,
            remaining_requests=0,
            remaining_tokens=5990,
            reset_requests_s=90.0,
            reset_tokens_s=0.1,
            limit_requests=30,
            limit_tokens=6000,
        )
        assert signal.exhausted_for_s == 90.0

    def test_retry_after_ms_wins_over_retry_after(self):
        signal = parse_signal({"retry-after": "9", "retry-after-ms": "1500"}, NOW)
        assert signal.retry_after_s == 1.5

    def test_bad_retry_after_ms_falls_back_to_retry_after(self):
        assert parse_signal({"retry-after": "9", "retry-after-ms": "x"}, NOW).retry_after_s == 9

    def test_unreadable_values_are_ignored(self):
        signal = parse_signal(
            {"x-ratelimit-remaining-requests": "lots", "x-ratelimit-reset-requests": "later"}, NOW
        )
        assert signal.remaining_requests is None
        assert signal.reset_requests_s is None
        assert signal.exhausted_for_s is None

    def test_non_finite_values_are_ignored(self):
        """One absurd header must neither cool a key forever nor escape as an exception."""
        signal = parse_signal(
            {
                "x-ratelimit-remaining-requests": "inf",
                "x-ratelimit-limit-tokens": "1e400",
                "retry-after-ms": "nan",
                "retry-after": "inf",
            },
            NOW,
        )
        assert signal == NO_SIGNAL


class TestExhaustion:
    @pytest.mark.parametrize(
        ("signal", "expected"),
        [
            (RateLimitSignal(remaining_requests=0, reset_requests_s=3.0), 3.0),
            (RateLimitSignal(remaining_requests=1, reset_requests_s=3.0), None),
            (RateLimitSignal(remaining_requests=0), None),
            (RateLimitSignal(remaining_tokens=0, reset_tokens_s=8.0), 8.0),
            (
                RateLimitSignal(
                    remaining_requests=0,
                    reset_requests_s=2.0,
                    remaining_tokens=0,
                    reset_tokens_s=5.0,
                ),
                5.0,
            ),
            (NO_SIGNAL, None),
        ],
    )
    def test_a_key_is_exhausted_only_when_a_budget_hit_zero_with_a_reset(
        self, signal: RateLimitSignal, expected: float | None
    ):
        assert signal.exhausted_for_s == expected
