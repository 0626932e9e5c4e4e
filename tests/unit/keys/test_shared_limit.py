"""Account-wide limit detection: two keys limited together cool the whole provider."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keys.shared_limit import UNANNOUNCED_COOLDOWN_S, SharedLimitDetector

T0 = 1_000.0


class TestAuto:
    def test_second_key_within_two_seconds_with_overlapping_resets_is_shared(self):
        detector = SharedLimitDetector()
        assert detector.observe(0, T0, T0 + 30) is None  # one key: it alone cools
        assert detector.observe(1, T0 + 1.5, T0 + 31) == T0 + 31
        assert detector.until(T0 + 2) == T0 + 31
        assert detector.until(T0 + 31) is None  # over once the reset has passed

    def test_the_later_reset_wins(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 40)
        assert detector.observe(1, T0 + 0.1, T0 + 30) == T0 + 40

    @pytest.mark.parametrize(
        ("second_key", "second_at", "second_reset"),
        [
            (0, T0 + 1, T0 + 30),  # the same key again
            (1, T0 + 2.5, T0 + 30),  # too late
            (1, T0 + 1, None),  # no announced reset
        ],
    )
    def test_unrelated_429s_are_not_shared(self, second_key, second_at, second_reset):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 30)
        assert detector.observe(second_key, second_at, second_reset) is None
        assert detector.until(second_at) is None

    def test_resets_that_do_not_overlap_are_not_shared(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 0.5)  # key 0 was free again before key 1's 429
        assert detector.observe(1, T0 + 1, T0 + 30) is None

    def test_first_429_without_reset_is_not_evidence(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, None)
        assert detector.observe(1, T0 + 1, T0 + 30) is None

    def test_a_later_429_extends_an_active_shared_limit(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 30)
        detector.observe(1, T0 + 1, T0 + 30)
        assert detector.observe(2, T0 + 10, T0 + 45) == T0 + 45
        assert detector.until(T0 + 40) == T0 + 45

    def test_clear_forgets(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 30)
        detector.observe(1, T0 + 1, T0 + 30)
        detector.clear()
        assert detector.until(T0 + 2) is None


class TestForced:
    def test_true_makes_any_429_shared(self):
        detector = SharedLimitDetector("true")
        assert detector.observe(3, T0, T0 + 12) == T0 + 12

    def test_true_without_reset_cools_briefly(self):
        detector = SharedLimitDetector("true")
        assert detector.observe(3, T0, None) == T0 + UNANNOUNCED_COOLDOWN_S

    def test_false_never_shares(self):
        detector = SharedLimitDetector("false")
        detector.observe(0, T0, T0 + 30)
        assert detector.observe(1, T0 + 0.1, T0 + 30) is None
        assert detector.until(T0 + 1) is None


events = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.floats(0, 5, allow_nan=False),
        st.one_of(st.none(), st.floats(0, 60, allow_nan=False)),
    ),
    max_size=20,
)


@given(events)
def test_a_shared_limit_is_an_announced_reset_and_never_shrinks(evts):
    """Whatever the 429s (auto mode), `until` is one of the announced resets, and a later 429
    never ends an active shared limit early."""
    detector = SharedLimitDetector()
    at, resets = T0, set()
    for key, gap, wait in evts:
        at += gap
        before = detector.until(at)
        reset = at + wait if wait is not None else None
        if reset is not None:
            resets.add(reset)
        detector.observe(key, at, reset)
        after = detector.until(at)
        assert after is None or after in resets
        assert before is None or (after is not None and after >= before)
