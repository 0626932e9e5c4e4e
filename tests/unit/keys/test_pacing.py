"""Pacing math (GCRA buckets) with an injected clock: budgets per window, evenly spread."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.keys.model import KeyStatus
from app.keys.pacing import (
    DEFAULT_COMPLETION_TOKENS,
    REQUEST_HEADROOM,
    Pace,
    estimate_tokens,
    slot_at,
    take,
)

T0 = 1_000.0


def send(status: KeyStatus, pace: Pace, tokens: int, now: float) -> float:
    """Start a request as the scheduler would: at its slot (maybe later than now)."""
    at = slot_at(status, pace, tokens, now)
    take(status, pace, tokens, at)
    return at


class TestRequestBudget:
    def test_starts_are_spread_evenly_rather_than_burst(self):
        pace, status = Pace(rpm=60), KeyStatus()
        starts = [send(status, pace, 1, T0) for _ in range(4)]  # all asked at the same instant
        gap = 1.0 * (1 + REQUEST_HEADROOM)
        assert starts == pytest.approx([T0, T0 + gap, T0 + 2 * gap, T0 + 3 * gap])

    def test_an_idle_key_is_free_at_once(self):
        pace, status = Pace(rpm=60), KeyStatus()
        send(status, pace, 1, T0)
        assert slot_at(status, pace, 1, T0 + 5) == T0 + 5

    def test_an_unpaced_key_is_always_free(self):
        status = KeyStatus()
        assert [send(status, Pace(), 1, T0) for _ in range(3)] == [T0, T0, T0]

    @settings(max_examples=200, deadline=None)
    @given(
        rpm=st.integers(min_value=1, max_value=600),
        asks=st.lists(st.floats(min_value=0, max_value=300), min_size=1, max_size=200),
    )
    def test_no_60_second_window_holds_more_than_rpm(self, rpm: int, asks: list[float]):
        pace, status = Pace(rpm=rpm), KeyStatus()
        starts = sorted(send(status, pace, 1, T0 + t) for t in sorted(asks))
        for i, start in enumerate(starts):
            in_window = sum(1 for s in starts[i:] if s < start + 60)
            assert in_window <= rpm


class TestTokenBudget:
    def test_tokens_refill_at_the_configured_rate(self):
        pace, status = Pace(tpm=6_000), KeyStatus()  # burst 100 tokens
        assert send(status, pace, 100, T0) == T0
        second = send(status, pace, 100, T0)
        assert second - T0 == pytest.approx(100 * pace.token_interval)

    def test_a_request_bigger_than_the_burst_goes_alone_once_the_bucket_is_full(self):
        pace, status = Pace(tpm=6_000), KeyStatus()
        assert send(status, pace, 1_000, T0) == T0  # not refused forever
        assert slot_at(status, pace, 1, T0) > T0 + 9  # and it left a long debt

    @settings(max_examples=150, deadline=None)
    @given(
        tpm=st.integers(min_value=600, max_value=100_000),
        asks=st.lists(
            st.tuples(
                st.floats(min_value=0, max_value=240), st.integers(min_value=1, max_value=200)
            ),
            min_size=1,
            max_size=150,
        ),
    )
    def test_estimated_tokens_in_any_60_second_window_stay_within_tpm(
        self, tpm: int, asks: list[tuple[float, int]]
    ):
        pace, status = Pace(tpm=tpm), KeyStatus()
        asks = [(t, min(c, int(pace.token_burst))) for t, c in sorted(asks)]
        sent = sorted((send(status, pace, c, T0 + t), c) for t, c in asks)
        for i, (start, _) in enumerate(sent):
            window = sum(c for s, c in sent[i:] if s < start + 60)
            assert window <= tpm * (1 + 1e-9)

    def test_both_budgets_must_have_room(self):
        pace, status = Pace(rpm=600, tpm=6_000), KeyStatus()
        send(status, pace, 100, T0)
        # The request bucket is free after 0.1 s, the token bucket only after ~1 s.
        assert slot_at(status, pace, 100, T0) == pytest.approx(T0 + 100 * pace.token_interval)


class TestEstimate:
    def test_prompt_characters_over_four_plus_the_completion_cap(self):
        assert estimate_tokens(401, 100) == math.ceil(401 / 4) + 100

    def test_a_default_completion_when_no_cap_is_set(self):
        assert estimate_tokens(0, None) == DEFAULT_COMPLETION_TOKENS
