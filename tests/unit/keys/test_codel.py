"""Standing-queue detection: the minimum wait over an interval above the target sheds the excess."""

from __future__ import annotations

import pytest

from app.keys.codel import Shed, StandingQueue

T0 = 1_000.0


def fed(
    waits: list[tuple[float, float]], target: float = 0.5, interval: float = 5.0
) -> StandingQueue:
    detector = StandingQueue(target, interval)
    for at, wait in waits:
        detector.observe(wait, T0 + at)
    return detector


class TestStandingQueue:
    def test_a_burst_that_drains_is_not_a_standing_queue(self):
        detector = fed([(0, 3.0), (1, 2.0), (2, 1.0), (3, 0.1), (6, 2.0)])
        assert not detector.shedding
        assert detector.admit(10.0) is None

    def test_waits_above_target_for_a_whole_interval_shed_the_excess(self):
        detector = fed([(t, 2.0) for t in range(0, 7)])
        assert detector.shedding
        assert detector.admit(7.2) == Shed(8)  # Retry-After: the expected wait, rounded up
        assert detector.admit(0.4) is None  # who can start within the target still gets in

    def test_not_yet_a_full_interval(self):
        assert not fed([(t, 2.0) for t in range(0, 5)]).shedding

    def test_one_short_wait_ends_shedding(self):
        detector = fed([(t, 2.0) for t in range(0, 7)] + [(7.5, 0.1)])
        assert not detector.shedding
        assert detector.admit(7.0) is None

    def test_an_empty_queue_ends_shedding(self):
        detector = fed([(t, 2.0) for t in range(0, 7)])
        detector.idle()
        assert not detector.shedding

    def test_shed_retry_after_is_at_least_one_second_and_finite(self):
        detector = fed([(t, 2.0) for t in range(0, 7)])
        assert detector.admit(0.6) == Shed(1)
        assert detector.admit(float("inf")) == Shed(5)

    @pytest.mark.parametrize(("target", "interval"), [(0, 1), (1, 0), (-1, 1)])
    def test_bad_parameters(self, target, interval):
        with pytest.raises(ValueError, match="positive"):
            StandingQueue(target, interval)
