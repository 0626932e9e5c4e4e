"""Standing-queue detection: a minimum wait that keeps growing sheds the excess, a flat one not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keys.codel import Shed, StandingQueue

T0 = 1_000.0


def fed(
    waits: list[tuple[float, float]], *, arrivals: bool = True, **kwargs: float
) -> StandingQueue:
    """Turns given at `at` after waiting `wait`; with `arrivals`, each turn's request arrived
    just then expecting that wait (steady demand), else all arrived before (one burst)."""
    detector = StandingQueue(**kwargs)
    for at, wait in waits:
        if arrivals:
            detector.admit(wait, T0 + at)
        detector.observe(wait, T0 + at)
    return detector


def ramp(seconds: float, growth_per_s: float, step: float = 0.01) -> list[tuple[float, float]]:
    """A turn every `step` seconds whose wait grows by `growth_per_s` each second."""
    return [(i * step, i * step * growth_per_s) for i in range(int(seconds / step))]


class TestDetection:
    def test_demand_half_above_the_rate_is_caught_within_a_few_intervals(self):
        detector = fed(ramp(0.45, 0.5))  # 150 % of the pool's rate: +50 ms per 100 ms
        assert detector.shedding(T0 + 0.45)

    def test_a_backlog_that_neither_grows_nor_drains_is_not_shed(self):
        # At exactly the pool's rate a hiccup leaves a backlog behind: shedding it would only
        # turn a wait into errors.
        detector = fed([(i * 0.01, 0.12) for i in range(300)])
        assert not detector.shedding(T0 + 3)

    def test_one_hiccup_is_not_a_trend(self):
        waits = [(i * 0.01, 0.06 if i < 100 else 0.4) for i in range(300)]
        assert not fed(waits).shedding(T0 + 3)

    def test_a_wait_above_the_ceiling_stands_whatever_its_trend(self):
        detector = fed([(i * 0.01, 1.2) for i in range(30)])
        assert detector.shedding(T0 + 0.29)
        # ... and is only kept under the ceiling: what would wait beyond it is the excess.
        assert detector.admit(0.9, T0 + 0.29) is None
        assert detector.admit(1.2, T0 + 0.29) == Shed(2)

    def test_clumped_turns_at_full_load_are_not_a_standing_queue(self):
        # Keys whose turns come in clumps: waits of 0 to 40 ms, over and over.
        waits = [(i * 0.006, (i % 8) * 0.005) for i in range(500)]
        assert not fed(waits).shedding(T0 + 3)

    def test_an_empty_queue_forgets_the_trend(self):
        detector = fed(ramp(0.15, 0.5))
        detector.idle()
        detector.observe(0.1, T0 + 0.16)
        detector.observe(0.16, T0 + 0.27)
        assert not detector.shedding(T0 + 0.27)

    @pytest.mark.parametrize(
        "kwargs", [{"target_s": 0}, {"interval_s": 0}, {"bound_s": -1}, {"ceiling_s": 0}]
    )
    def test_bad_parameters(self, kwargs):
        with pytest.raises(ValueError, match="positive"):
            StandingQueue(**kwargs)


class TestShedding:
    def standing(self) -> StandingQueue:
        detector = fed(ramp(0.35, 0.5))  # growing: cut to the bound
        assert detector.shedding(T0 + 0.34)
        return detector

    def test_the_excess_gets_a_retry_after_of_its_expected_wait(self):
        detector = self.standing()
        assert detector.admit(1.2, T0 + 0.34) == Shed(2)
        assert detector.admit(0.05, T0 + 0.34) == Shed(1)  # at least one second
        assert detector.admit(float("inf"), T0 + 0.34) == Shed(1)

    def test_who_starts_within_the_bound_or_is_not_the_excess_gets_in(self):
        detector = self.standing()
        assert detector.admit(0.01, T0 + 0.34) is None
        assert detector.admit(1.2, T0 + 0.34, excess=False) is None

    def test_shedding_lasts_while_arrivals_find_the_queue_long(self):
        detector = self.standing()
        for step in range(1, 20):  # admitted waits are short by now, demand is not
            detector.observe(0.01, T0 + 0.34 + step * 0.05)
            assert detector.admit(0.5, T0 + 0.34 + step * 0.05) is not None

    def test_a_drained_burst_lets_the_next_burst_wait(self):
        # One user's burst arrived at once and drained slowly (its waits grew like an overload's,
        # but nobody arrived to find the line long); the next, right after, waits too.
        detector = StandingQueue()
        assert detector.admit(1.5, T0) is None
        for at, wait in ramp(2.0, 1.0):
            detector.observe(wait, T0 + at)
        detector.idle()
        assert not detector.shedding(T0 + 2.0)
        assert [detector.admit(0.1 * n, T0 + 2.0 + 0.001 * n) for n in range(12)] == [None] * 12

    def test_bookings_far_ahead_are_arrivals_that_found_the_queue_long(self):
        # Requests that book a paced turn outside the line arrive too: once the trend is seen,
        # the line sheds at once, not an interval after its own first arrival.
        detector = StandingQueue()
        for at, wait in ramp(0.45, 0.5):
            detector.booked(wait, T0 + at)
        assert detector.shedding(T0 + 0.45)
        assert detector.admit(0.5, T0 + 0.45) == Shed(1)

    def test_bookings_within_the_bound_do_not_keep_it_on(self):
        detector = self.standing()
        for step in range(1, 20):
            detector.booked(0.01, T0 + 0.34 + step * 0.01)
        assert not detector.shedding(T0 + 0.55)

    def test_shedding_goes_on_through_an_empty_line(self):
        # At 150 % the line empties because it sheds; demand still finds it long at once.
        detector = self.standing()
        detector.idle()
        assert detector.shedding(T0 + 0.36)
        assert detector.admit(0.01, T0 + 0.36) is None  # within the bound: let in
        assert detector.admit(0.5, T0 + 0.37) == Shed(1)
        detector.idle()
        assert detector.admit(0.5, T0 + 0.45) == Shed(1)  # still found long: still shedding

    def test_it_ends_an_interval_after_the_last_arrival_that_found_it_long(self):
        detector = self.standing()
        detector.admit(0.5, T0 + 0.34)
        assert detector.shedding(T0 + 0.43)
        assert not detector.shedding(T0 + 0.45)
        assert detector.admit(0.5, T0 + 0.46) is None


@given(st.lists(st.floats(0, 3), min_size=1, max_size=300), st.floats(0, 0.5))
def test_turns_without_new_arrivals_never_shed(waits, gap):
    # Whatever a drained burst's waits looked like, an arrival an interval after the last one
    # that found the line long is let in: only demand that keeps coming is shed.
    detector = StandingQueue()
    detector.admit(max(waits), T0)
    for i, wait in enumerate(waits):
        detector.observe(wait, T0 + i * 0.013)
    now = T0 + max(len(waits) * 0.013, detector.interval_s) + gap
    assert detector.admit(10.0, now) is None


@given(st.lists(st.floats(0, 0.099), min_size=1, max_size=200))
def test_waits_under_the_target_never_shed(waits):
    detector = StandingQueue()
    for i, wait in enumerate(waits):
        detector.observe(min(wait, detector.target_s * 0.99), T0 + i * 0.013)
    assert not detector.shedding(T0 + len(waits) * 0.013)
