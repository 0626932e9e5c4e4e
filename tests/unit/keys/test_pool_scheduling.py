"""KeyPool with learned limits and account-wide limits wired in (injected clock, pure)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from app.keys.model import Ask, KeyState, Outcome, RateLimitSignal
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.shared_limit import SharedMode
from app.keys.strategies import RoundRobin

T0 = 1_000.0
RNG = random.Random(0)


def announced(limit: int, remaining: int, reset_s: float) -> RateLimitSignal:
    return RateLimitSignal(
        limit_requests=limit, remaining_requests=remaining, reset_requests_s=reset_s
    )


def learned_pool(limit: int, window_s: float, pace: Pace | None = None) -> KeyPool:
    """One key that answered once, announcing `limit` per `window_s` (one unit used)."""
    pool = KeyPool(1, RoundRobin(), pace=pace)
    grant = pool.acquire(T0, RNG, Ask())
    assert grant.index == 0
    reset = window_s / limit  # one unit used refills in one interval
    pool.release(0, Outcome.OK, T0, announced(limit, limit - 1, reset))
    return pool


class TestLearnedLimits:
    def test_an_announced_limit_paces_the_key_like_a_configured_one(self):
        pool = learned_pool(60, 60.0)
        status = pool.statuses[0]
        assert (status.learned_requests, status.learned_requests_window) == (60, 60.0)
        gap = 1 + REQUEST_HEADROOM  # 60 a minute: one start a second (plus the headroom)
        refused = pool.acquire(T0, RNG, Ask())
        assert refused.index is None  # the answer that taught the limit was a start too
        assert refused.wait_s is not None
        assert abs(refused.wait_s - gap) < 1e-9
        assert pool.acquire(T0 + gap, RNG, Ask()).index == 0
        assert pool.acquire(T0 + gap, RNG, Ask()).index is None

    def test_a_per_day_limit_is_paced_over_the_day(self):
        pool = learned_pool(14_400, 86_400.0)
        assert pool.acquire(T0 + 6.1, RNG, Ask()).index == 0
        refused = pool.acquire(T0 + 11, RNG, Ask())
        assert refused.index is None  # one every 6 s, not 240 a minute
        assert pool.acquire(T0 + 12.2, RNG, Ask()).index == 0

    def test_a_configured_budget_wins(self):
        pool = learned_pool(60, 60.0, pace=Pace(rpm=600))
        assert pool.acquire(T0 + 0.11, RNG, Ask()).index == 0
        assert pool.acquire(T0 + 0.22, RNG, Ask()).index == 0  # 600 a minute, not 60

    def test_failures_teach_nothing(self):
        pool = KeyPool(1, RoundRobin())
        pool.acquire(T0, RNG, Ask())
        pool.release(0, Outcome.SERVER_ERROR, T0, announced(60, 59, 1.0))
        assert pool.statuses[0].learned_requests is None

    @settings(max_examples=60, deadline=None)
    @given(
        limit=st.integers(2, 30),
        window=st.sampled_from([1.0, 60.0]),
        gaps=st.lists(st.floats(0.0, 3.0), min_size=1, max_size=120),
    )
    def test_no_window_ever_holds_more_than_the_learned_limit(
        self, limit: int, window: float, gaps: list[float]
    ):
        """Whatever the arrivals, starts granted once the key learned its limit never exceed L
        per W (the answer that taught it came before: the first window is not paced)."""
        pool = learned_pool(limit, window)
        starts: list[float] = []
        now = T0
        for gap in gaps:
            now += gap * window / 10
            grant = pool.acquire(now, RNG, Ask(reserve=True, max_queue_s=window))
            if grant.index is not None:
                starts.append(now + grant.delay_s)
        starts.sort()
        for i, start in enumerate(starts):
            inside = [s for s in starts[i:] if s < start + window]
            assert len(inside) <= limit


def limited(pool: KeyPool, index: int, now: float, retry_after_s: float | None) -> None:
    grant = pool.acquire(now, RNG, Ask(preferred=index))
    assert grant.index == index
    pool.release(index, Outcome.RATE_LIMITED, now, RateLimitSignal(retry_after_s=retry_after_s))


def shared_pool(mode: SharedMode, size: int = 3) -> KeyPool:
    return KeyPool(size, RoundRobin(), shared_limit=mode)


class TestSharedLimits:
    def test_two_keys_limited_together_cool_the_whole_provider(self):
        pool = shared_pool("auto")
        limited(pool, 0, T0, 30.0)
        assert pool.acquire(T0, RNG, Ask()).index == 1  # one 429: only that key cools
        # key 1 answered with 5 requests left of its own: its 429 can only be the account's
        pool.release(1, Outcome.OK, T0, RateLimitSignal(remaining_requests=5, reset_requests_s=30))
        limited(pool, 1, T0 + 1, 40.0)
        assert pool.shared.until(T0 + 1) == T0 + 41
        refused = pool.acquire(T0 + 1, RNG, Ask())
        assert refused.index is None
        assert refused.refused == "rate_limited"
        assert refused.wait_s == 40.0  # the true Retry-After: the account's reset
        assert {s.state for s in pool.statuses} == {KeyState.RATE_LIMITED}

    def test_keys_that_each_emptied_their_own_budget_are_not_an_account_limit(self):
        # Per-second buckets under equal load: every key answers "0 left" and then a 429 in the
        # same instant, resets overlapping. Read as account-wide, this cooled the provider and
        # split every learned limit by the number of keys (goodput fell to 1/8 in the bench).
        pool = shared_pool("auto")
        for index in (0, 1):
            assert pool.acquire(T0, RNG, Ask(preferred=index)).index == index
            pool.release(
                index, Outcome.OK, T0, RateLimitSignal(remaining_requests=0, reset_requests_s=0.5)
            )
        for index in (0, 1):
            pool.release(index, Outcome.RATE_LIMITED, T0 + 0.1, RateLimitSignal(retry_after_s=0.4))
        assert pool.shared.until(T0 + 0.1) is None
        assert not pool.shared.seen  # learned limits stay each key's own
        assert pool.acquire(T0 + 0.1, RNG, Ask()).index == 2

    def test_far_apart_429s_are_each_keys_own(self):
        pool = shared_pool("auto")
        limited(pool, 0, T0, 10.0)
        limited(pool, 1, T0 + 3, 10.0)
        assert pool.shared.until(T0 + 3) is None
        assert pool.statuses[2].state is KeyState.ACTIVE
        assert pool.acquire(T0 + 3, RNG, Ask()).index == 2

    def test_true_cools_the_provider_at_the_first_429(self):
        pool = shared_pool("true")
        limited(pool, 0, T0, 20.0)
        assert pool.acquire(T0, RNG, Ask()).wait_s == 20.0

    def test_false_never_does(self):
        pool = shared_pool("false")
        limited(pool, 0, T0, 20.0)
        limited(pool, 1, T0, 20.0)
        assert pool.acquire(T0, RNG, Ask()).index == 2

    @settings(max_examples=60, deadline=None)
    @given(
        events=st.lists(
            st.tuples(st.integers(0, 2), st.floats(0.0, 3.0), st.sampled_from([None, 1.0, 30.0])),
            min_size=1,
            max_size=20,
        )
    )
    def test_while_shared_no_key_is_granted_before_the_reset(
        self, events: list[tuple[int, float, float | None]]
    ):
        pool = shared_pool("auto")
        now = T0
        for index, gap, retry in events:
            now += gap
            grant = pool.acquire(now, RNG, Ask(preferred=index))
            if grant.index is None:
                continue
            pool.release(
                grant.index, Outcome.RATE_LIMITED, now, RateLimitSignal(retry_after_s=retry)
            )
            until = pool.shared.until(now)
            if until is not None:
                assert pool.acquire(now, RNG, Ask()).index is None
                assert pool.acquire(until, RNG, Ask()).index is not None

    def test_learned_limits_of_an_account_limited_provider_are_shared_by_its_keys(self):
        """With an account-wide limit, each key announces the account's budget: 60 a minute
        over three keys paces each at 20 a minute, so the account never sees more than 60."""
        pool = shared_pool("true")
        for index in range(3):
            assert pool.acquire(T0, RNG, Ask(preferred=index)).index == index
            pool.release(index, Outcome.OK, T0, announced(60, 57, 3.0))
        gap = 3 * (1 + REQUEST_HEADROOM)
        refused = pool.acquire(T0, RNG, Ask())
        assert refused.wait_s is not None
        assert abs(refused.wait_s - gap) < 1e-9
        assert [pool.acquire(T0 + gap, RNG, Ask()).index for _ in range(4)] == [0, 1, 2, None]
