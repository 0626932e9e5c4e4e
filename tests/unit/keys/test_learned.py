"""Learned limits: windows inferred from announced limits and resets; configured values win."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keys.learned import (
    USUAL_WINDOWS_S,
    EffectiveLimits,
    LearnedLimit,
    LearnedLimits,
    effective_limits,
    infer_window,
    learn,
    pace_with,
)
from app.keys.model import NO_SIGNAL, KeyStatus
from app.keys.pacing import REQUEST_HEADROOM, Pace, slot_at, take
from app.keys.signals import parse_signal

NOTHING = LearnedLimits()


def signal(**headers: str):
    return parse_signal({f"x-ratelimit-{k.replace('_', '-')}": v for k, v in headers.items()}, 0.0)


class TestInferWindow:
    @pytest.mark.parametrize(
        ("limit", "remaining", "reset", "window"),
        [
            (60, 59, 1.0, 60.0),  # OpenAI RPM: one used, back in a second
            (10_000, 9_990, 0.06, 60.0),  # "60ms" for 10 of 10k per minute
            (14_400, 14_370, 179.56, 86_400.0),  # Groq RPD: "2m59.56s" for 30 used
            (6_000, 5_100, 9.0, 60.0),  # Groq TPM: 900 tokens refill in 9 s
            (1_000, 0, 3_600.0, 3_600.0),  # all used, full hour to refill
            (5, 4, 0.2, 1.0),  # per second
        ],
    )
    def test_refill_rate_gives_the_usual_window(self, limit, remaining, reset, window):
        assert infer_window(limit, remaining, reset) == window

    @pytest.mark.parametrize(
        ("remaining", "reset"), [(19, 1.0), (19, 0.999), (19, 0.3), (18, 0.9), (17, 1.0)]
    )
    def test_a_sliding_log_lightly_used_stays_per_second(self, remaining, reset):
        # The fake (and any sliding log) announces when its oldest request expires: 1 of 20
        # used, back in 1 s is 20 per second, not 20 per minute (which paced keys to 1/60th).
        assert infer_window(20, remaining, reset) == 1.0

    @pytest.mark.parametrize(
        ("reset", "window"), [(0.5, 1.0), (1.0, 1.0), (6.0, 60.0), (360.0, 3_600.0)]
    )
    def test_without_usage_the_reset_bounds_the_window_from_below(self, reset, window):
        assert infer_window(100, None, reset) == window
        assert infer_window(100, 100, reset) == window

    @pytest.mark.parametrize(("remaining", "reset"), [(5, 0.0), (5, -1.0), (5, float("inf"))])
    def test_no_usable_reset_means_no_estimate(self, remaining, reset):
        assert infer_window(10, remaining, reset) is None

    def test_a_reset_beyond_a_day_is_not_a_usual_window(self):
        assert infer_window(10, None, 200_000.0) is None

    @given(
        limit=st.integers(1, 10**7),
        used=st.floats(0.0, 1.0),
        reset=st.floats(1e-3, 1e6, allow_nan=False),
    )
    def test_any_headers_give_a_usual_window_or_none(self, limit, used, reset):
        remaining = min(limit - 1, int(limit * (1 - used)))
        assert infer_window(limit, remaining, reset) in (*USUAL_WINDOWS_S, None)


class TestLearn:
    def test_openai_duration_formats_are_understood(self):
        learned = learn(
            NOTHING,
            signal(
                limit_requests="10000",
                remaining_requests="9999",
                reset_requests="6ms",
                limit_tokens="2000000",
                remaining_tokens="1000000",
                reset_tokens="30s",
            ),
        )
        assert learned.requests == LearnedLimit(10_000, 60.0)
        assert learned.tokens == LearnedLimit(2_000_000, 60.0)

    def test_groq_daily_requests_pace_as_per_day(self):
        learned = learn(
            NOTHING,
            signal(limit_requests="14400", remaining_requests="14370", reset_requests="2m59.56s"),
        )
        assert learned.requests == LearnedLimit(14_400, 86_400.0)
        assert learned.requests.per_minute == pytest.approx(10.0)
        assert learned.requests.interval_s == pytest.approx(6.0)

    def test_an_idle_answer_keeps_what_a_busy_one_taught(self):
        busy = learn(
            NOTHING, signal(limit_requests="60", remaining_requests="0", reset_requests="1m")
        )
        idle = learn(
            busy, signal(limit_requests="60", remaining_requests="60", reset_requests="0s")
        )
        assert idle is busy

    def test_a_new_limit_replaces_the_old(self):
        first = learn(
            NOTHING, signal(limit_requests="60", remaining_requests="59", reset_requests="1s")
        )
        second = learn(
            first, signal(limit_requests="120", remaining_requests="119", reset_requests="0.5s")
        )
        assert second.requests == LearnedLimit(120, 60.0)

    def test_no_headers_learn_nothing(self):
        assert learn(NOTHING, NO_SIGNAL) is NOTHING

    def test_limit_without_any_reset_is_not_guessed(self):
        assert learn(NOTHING, signal(limit_requests="60")) == NOTHING


class TestEffectiveLimits:
    LEARNED = LearnedLimits(LearnedLimit(14_400, 86_400.0), LearnedLimit(6_000, 60.0))

    def test_configured_values_win(self):
        limits = effective_limits(30, 1_000, self.LEARNED)
        assert limits == EffectiveLimits(30, 1_000, "config")

    def test_learned_values_fill_the_gaps(self):
        assert effective_limits(None, None, self.LEARNED).as_dict() == {
            "rpm": 10,
            "tpm": 6_000,
            "source": "learned",
        }
        mixed = effective_limits(30, None, self.LEARNED)
        assert (mixed.rpm, mixed.tpm, mixed.source) == (30, 6_000, "learned")

    def test_nothing_known_is_all_null(self):
        assert effective_limits(None, None, NOTHING).as_dict() == {
            "rpm": None,
            "tpm": None,
            "source": None,
        }

    def test_budgets_under_one_a_minute_stay_exact(self):
        limits = effective_limits(None, None, LearnedLimits(LearnedLimit(100, 86_400.0)))
        assert limits.rpm == pytest.approx(100 / 1_440)
        assert limits.as_dict()["rpm"] == 0.0694


class TestPaceWith:
    def test_nothing_learned_keeps_the_configured_pace(self):
        configured = Pace(30, None, share=2)
        assert pace_with(configured, NOTHING) is configured

    def test_learned_budgets_fill_the_gaps_and_keep_the_share(self):
        learned = LearnedLimits(LearnedLimit(14_400, 86_400.0), LearnedLimit(6_000, 60.0))
        assert pace_with(Pace(None, 1_000, share=2), learned) == Pace(10.0, 1_000, share=2)

    def test_a_learned_daily_budget_is_paced_as_that_budget_per_day(self):
        pace = pace_with(Pace(), LearnedLimits(LearnedLimit(100, 86_400.0)))
        status, starts = KeyStatus(), []
        for _ in range(5):
            at = slot_at(status, pace, 1, 0.0)
            take(status, pace, 1, at)
            starts.append(at)
        gap = 864.0 * (1 + REQUEST_HEADROOM)  # 100 a day: one every 14.4 minutes
        assert starts == pytest.approx([0.0, gap, 2 * gap, 3 * gap, 4 * gap])
