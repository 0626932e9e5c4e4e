"""Account-wide limit detection: two keys limited together cool the whole provider."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.keys.model import Ask, KeyState, KeyStatus, Outcome, RateLimitSignal
from app.keys.pool import KeyPool
from app.keys.shared_limit import (
    UNANNOUNCED_COOLDOWN_S,
    SharedLimitDetector,
    announced_reset,
    cool_all,
    has_own_budget,
)
from app.keys.strategies import RoundRobin

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

    def test_a_second_key_out_of_its_own_budget_is_not_evidence(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 0.4)
        assert detector.observe(1, T0 + 0.01, T0 + 0.41, own_budget_left=False) is None
        assert not detector.seen

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

    def test_once_seen_a_single_429_is_the_accounts(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 0.05)
        detector.observe(1, T0 + 0.01, T0 + 0.05)
        assert detector.until(T0 + 1) is None  # that limit is over ...
        assert detector.observe(2, T0 + 60, T0 + 61) == T0 + 61  # ... the next 429 is one too
        assert detector.observe(3, T0 + 90, None) is None  # without a reset it proves nothing

    def test_clear_forgets(self):
        detector = SharedLimitDetector()
        detector.observe(0, T0, T0 + 30)
        detector.observe(1, T0 + 1, T0 + 30)
        detector.clear()
        assert detector.until(T0 + 2) is None


class TestOwnBudget:
    """Whether the provider's own word says a key's bucket had room when a 429 on it came."""

    @staticmethod
    def key(left: int | None, reset_at: float | None, in_flight: int = 1) -> KeyStatus:
        return KeyStatus(budget_left=left, budget_reset_at=reset_at, in_flight=in_flight)

    def test_requests_left_before_the_reset(self):
        assert has_own_budget(self.key(3, T0 + 1), T0)
        assert not has_own_budget(self.key(0, T0 + 1), T0)

    def test_a_reset_passed_with_only_this_request_out(self):
        # "remaining 0, back in 50 ms", 200 ms ago: its own bucket has room again.
        assert has_own_budget(self.key(0, T0 - 0.15), T0)

    def test_a_reset_passed_with_other_requests_out_proves_nothing(self):
        assert not has_own_budget(self.key(0, T0 - 0.15, in_flight=2), T0)

    def test_nothing_announced_proves_nothing(self):
        assert not has_own_budget(self.key(None, None), T0)


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


class TestHelpers:
    def test_announced_reset_prefers_retry_after(self):
        assert announced_reset(RateLimitSignal(retry_after_s=5, reset_requests_s=9), T0) == T0 + 5
        exhausted = RateLimitSignal(remaining_requests=0, reset_requests_s=9)
        assert announced_reset(exhausted, T0) == T0 + 9
        assert announced_reset(RateLimitSignal(), T0) is None

    def test_cool_all_cools_usable_keys_and_leaves_failed_ones(self):
        active, longer, failed = KeyStatus(), KeyStatus(), KeyStatus(state=KeyState.FAILED)
        longer.state, longer.cooldown_until = KeyState.RATE_LIMITED, T0 + 99
        cool_all([active, longer, failed], T0 + 30, T0)
        assert (active.state, active.cooldown_until, active.announced) == (
            KeyState.RATE_LIMITED,
            T0 + 30,
            True,
        )
        assert longer.cooldown_until == T0 + 99
        assert failed.state is KeyState.FAILED


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


class TestWithThePool:
    """The wiring the pool will use, driven from outside it: after the second key's 429 the
    provider refuses at once, with the shared reset as the wait (Path B's Retry-After)."""

    def test_two_429s_cool_the_whole_provider(self):
        pool, rng, detector = KeyPool(5, RoundRobin()), random.Random(0), SharedLimitDetector()
        signal = RateLimitSignal(retry_after_s=30.0)
        tried: set[int] = set()
        for at in (T0, T0 + 0.5):
            grant = pool.acquire(at, rng, Ask(exclude=frozenset(tried)))
            assert grant.index is not None
            tried.add(grant.index)
            pool.release(grant.index, Outcome.RATE_LIMITED, at, signal)
            until = detector.observe(grant.index, at, announced_reset(signal, at))
            if until is not None:
                cool_all(pool.statuses, until, at)
        refused = pool.acquire(T0 + 0.6, rng, Ask(exclude=frozenset(tried)))
        assert (refused.index, refused.refused) == (None, "rate_limited")
        assert refused.wait_s == pytest.approx(29.9)  # until the first key's reset at T0 + 30
        assert detector.until(T0 + 0.6) == T0 + 30.5
