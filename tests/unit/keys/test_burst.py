"""Burst-tolerant pacing: bursts after idling, and never more than `rpm` in any 60-s window."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.keys.burst import BurstPace, burst_slot_at, burst_take, default_burst
from app.keys.pacing import REQUEST_HEADROOM

T0 = 1_000.0


def most_in_any_window(starts: list[float], window: float = 60.0) -> int:
    """The largest count of starts in any closed window [t, t + window]."""
    starts = sorted(starts)
    return max(
        (bisect.bisect_right(starts, t + window) - i for i, t in enumerate(starts)), default=0
    )


def run_greedy(pace: BurstPace, asks: list[float]) -> list[float]:
    """Start each ask only if it conforms right now (a request that would have to wait is refused)."""
    tat, starts = 0.0, []
    for now in asks:
        if burst_slot_at(tat, pace, now) <= now:
            tat = burst_take(tat, pace, now)
            starts.append(now)
    return starts


def run_reserving(pace: BurstPace, asks: list[float]) -> list[float]:
    """Every ask reserves the earliest slot, as a waiting request does."""
    tat, starts = 0.0, []
    for now in asks:
        at = burst_slot_at(tat, pace, now)
        tat = burst_take(tat, pace, at)
        starts.append(at)
    return starts


class TestBurst:
    def test_an_idle_key_takes_its_burst_at_once_then_spreads(self):
        pace = BurstPace(rpm=30, burst=5)
        starts = run_reserving(pace, [T0] * 7)
        assert starts[:5] == pytest.approx([T0] * 5)
        gap = 60 / 26 * (1 + REQUEST_HEADROOM)
        assert starts[5] == pytest.approx(T0 + gap)
        assert starts[6] == pytest.approx(T0 + 2 * gap)

    def test_burst_of_one_is_the_plain_pacer(self):
        pace = BurstPace(rpm=60)
        assert pace.interval == pytest.approx(1.0 * (1 + REQUEST_HEADROOM))
        assert pace.tolerance == 0

    def test_burst_is_capped_by_the_budget(self):
        assert BurstPace(rpm=3, burst=10).effective_burst == 3
        assert BurstPace(rpm=30, burst=10, share=5).effective_burst == 6

    @pytest.mark.parametrize(("rpm", "burst"), [(1, 1), (5, 1), (30, 3), (600, 60)])
    def test_default_burst(self, rpm, burst):
        assert default_burst(rpm) == burst

    def test_invalid(self):
        with pytest.raises(ValueError, match="rpm"):
            BurstPace(rpm=0)


asks = st.lists(st.floats(0, 400, allow_nan=False), min_size=1, max_size=300).map(
    lambda xs: [T0 + x for x in sorted(xs)]
)


@settings(max_examples=400)
@given(rpm=st.integers(1, 200), burst_fraction=st.floats(0, 1), asks=asks)
def test_never_more_than_rpm_in_any_60_s_window(rpm, burst_fraction, asks):
    pace = BurstPace(rpm=rpm, burst=max(1, round(rpm * burst_fraction)))
    assert most_in_any_window(run_greedy(pace, asks)) <= rpm
    assert most_in_any_window(run_reserving(pace, asks)) <= rpm


@settings(max_examples=200)
@given(
    rpm=st.integers(1, 120),
    share=st.integers(1, 4),
    burst=st.integers(1, 20),
    asks=st.lists(asks, min_size=4, max_size=4),
)
def test_processes_sharing_a_budget_stay_within_it_together(rpm, share, burst, asks):
    if rpm < share:
        return  # each process needs at least one request of the budget
    pace = BurstPace(rpm=rpm, burst=burst, share=share)
    starts = [s for process in asks[:share] for s in run_reserving(pace, process)]
    assert most_in_any_window(starts) <= rpm


@given(rpm=st.integers(2, 200))
def test_the_sustained_rate_uses_most_of_the_budget(rpm):
    """With the default burst, a busy key still gets at least ~90 % of its budget per minute."""
    pace = BurstPace(rpm=rpm, burst=default_burst(rpm))
    starts = run_reserving(pace, [T0] * (rpm * 10))
    in_ten_minutes = sum(1 for s in starts if s < T0 + 600)
    assert in_ten_minutes >= 0.88 * rpm * 10 - 1
