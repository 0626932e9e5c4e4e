"""KeyPool.acquire: free keys, reserved turns, refusals, the breaker and hanging keys."""

from __future__ import annotations

import random

import pytest

from app.keys.breaker import CircuitBreaker, CircuitState
from app.keys.model import NO_SIGNAL, Ask, KeyState, Outcome, RateLimitSignal
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.stall import STALL_FLOOR_S
from app.keys.strategies import RoundRobin
from app.keys.transitions import TRIAL_HOLD_S

NOW = 20_000.0
RNG = random.Random(0)
GAP = 0.1 * (1 + REQUEST_HEADROOM)  # 600 RPM


def pool(size: int = 2, **kwargs: object) -> KeyPool:
    """Per-key rules: account-wide detection off unless a test turns it on."""
    kwargs.setdefault("shared_limit", "false")
    return KeyPool(size, RoundRobin(), **kwargs)  # type: ignore[arg-type]


def cool(p: KeyPool, index: int, seconds: float, now: float = NOW) -> None:
    grant = p.acquire(now, RNG, Ask(preferred=index))
    assert grant.index == index
    p.release(index, Outcome.RATE_LIMITED, now, RateLimitSignal(retry_after_s=seconds))


class TestPacing:
    def test_a_burst_is_spread_over_the_keys_then_queued_within_the_bound(self):
        p = pool(2, pace=Pace(rpm=600))
        ask = Ask(reserve=True, max_queue_s=0.25)
        grants = [p.acquire(NOW, RNG, ask) for _ in range(7)]
        assert [g.index for g in grants[:2]] == [0, 1]
        assert [g.delay_s for g in grants] == pytest.approx([0, 0, GAP, GAP, 2 * GAP, 2 * GAP, 0])
        refused = grants[6]
        assert refused.index is None
        assert refused.refused == "rate_limited"
        assert refused.wait_s == pytest.approx(3 * GAP)

    def test_without_reserve_the_answer_says_how_soon_a_turn_would_be(self):
        p = pool(1, pace=Pace(rpm=600))
        p.acquire(NOW, RNG, Ask())
        grant = p.acquire(NOW, RNG, Ask(max_queue_s=1.0))
        assert grant.index is None
        assert grant.reservable_s == pytest.approx(GAP)

    def test_waiters_never_exceed_what_the_pool_serves_within_the_bound(self):
        p = pool(4, pace=Pace(rpm=120))  # 2 req/s per key, 8 req/s in all
        ask = Ask(reserve=True, max_queue_s=1.0)
        granted = [g for g in (p.acquire(NOW, RNG, ask) for _ in range(50)) if g.index is not None]
        assert len(granted) == 8  # two turns per key within one second (t=0 and t≈0.505)
        assert max(g.delay_s for g in granted) <= 1.0

    def test_turns_booked_inside_a_later_cooldown_are_booked_again_one_by_one(self):
        p = pool(1, pace=Pace(rpm=600))
        ask = Ask(reserve=True, max_queue_s=1.0)
        grants = [p.acquire(NOW, RNG, ask) for _ in range(4)]  # turns at 0, 1, 2, 3 gaps
        p.release(0, Outcome.OK, NOW, RateLimitSignal(remaining_requests=0, reset_requests_s=1.0))
        # Turns 1..3 fell inside the announced reset, well beyond Pace.request_slip: each goes
        # after it and after the queue, still one gap apart, instead of all at the reset at once.
        waits = [p.recheck(0, NOW + g.delay_s) + g.delay_s for g in grants[1:]]
        assert waits == pytest.approx([1.0, 1.0 + GAP, 1.0 + 2 * GAP])

    def test_a_reset_just_past_a_booked_turn_delays_it_but_keeps_its_slot(self):
        # At full load a sliding window answers "0 left, back in a few ms" about the next
        # turn: it starts that much later, and the key's later turns stay where they were.
        p = pool(1, pace=Pace(rpm=600))
        ask = Ask(reserve=True, max_queue_s=1.0)
        grants = [p.acquire(NOW, RNG, ask) for _ in range(3)]  # turns at 0, 1 and 2 gaps
        late = 0.004
        reset = RateLimitSignal(remaining_requests=0, reset_requests_s=GAP + late)
        p.release(0, Outcome.OK, NOW, reset)
        assert p.recheck(0, NOW + grants[1].delay_s) == pytest.approx(late)
        assert p.recheck(0, NOW + grants[2].delay_s) == 0
        assert p.acquire(NOW, RNG, ask).delay_s == pytest.approx(3 * GAP)  # no slot lost

    def test_with_a_token_budget_a_near_reset_still_books_the_turn_again(self):
        p = pool(1, pace=Pace(rpm=600, tpm=1_000_000))
        ask = Ask(reserve=True, max_queue_s=1.0)
        grants = [p.acquire(NOW, RNG, ask) for _ in range(2)]
        reset = RateLimitSignal(remaining_requests=0, reset_requests_s=GAP + 0.004)
        p.release(0, Outcome.OK, NOW, reset)
        assert p.recheck(0, NOW + grants[1].delay_s) == pytest.approx(GAP)

    def test_an_unpaced_turn_just_waits_for_the_reset(self):
        p = pool(1)
        p.acquire(NOW, RNG, Ask())
        p.release(0, Outcome.OK, NOW, RateLimitSignal(remaining_requests=0, reset_requests_s=2))
        assert p.recheck(0, NOW + 0.5) == pytest.approx(1.5)
        assert p.recheck(0, NOW + 2) == 0


class TestCooldowns:
    def test_the_other_key_is_used_at_once(self):
        p = pool(2)
        cool(p, 0, 30)
        assert p.acquire(NOW, RNG, Ask(reserve=True, max_wait_s=60)).index == 1

    def test_one_waiter_per_cooling_key_within_the_deadline(self):
        p = pool(2)
        cool(p, 0, 3)
        cool(p, 1, 5)
        ask = Ask(reserve=True, max_wait_s=10)
        first, second, third = (p.acquire(NOW, RNG, ask) for _ in range(3))
        assert (first.index, first.delay_s, first.after_cooldown) == (0, 3, True)
        assert (second.index, second.delay_s) == (1, 5)
        assert third.index is None
        assert third.wait_s == pytest.approx(3 + TRIAL_HOLD_S)  # free for others at the latest

    def test_a_paced_keys_turn_after_a_cooldown_is_not_jittered(self):
        # Its turns are spaced by its budget; one sent late would crowd the next booked turn.
        p = pool(1, pace=Pace(rpm=60))
        cool(p, 0, 3)
        grant = p.acquire(NOW, RNG, Ask(reserve=True, max_wait_s=10))
        assert (grant.index, grant.delay_s, grant.after_cooldown) == (0, 3, False)

    def test_a_cooldown_beyond_the_deadline_is_refused_with_the_wait(self):
        p = pool(1)
        cool(p, 0, 40)
        grant = p.acquire(NOW, RNG, Ask(reserve=True, max_wait_s=30))
        assert (grant.index, grant.refused, grant.wait_s) == (None, "rate_limited", 40)

    def test_after_the_cooldown_the_first_request_goes_alone(self):
        p = pool(1)
        cool(p, 0, 1)
        assert p.acquire(NOW + 1, RNG, Ask()).index == 0
        assert p.acquire(NOW + 1, RNG, Ask()).index is None
        p.release(0, Outcome.OK, NOW + 1.01, NO_SIGNAL)
        assert p.acquire(NOW + 1.02, RNG, Ask()).index == 0

    def test_retry_after_counts_keys_this_request_already_tried(self):
        p = pool(2)
        cool(p, 0, 2.5)
        cool(p, 1, 4)
        grant = p.acquire(NOW, RNG, Ask(exclude={0, 1}))
        assert grant.wait_s == pytest.approx(2.5)

    def test_failed_and_disabled_keys_offer_no_wait(self):
        p = pool(2)
        p.statuses[0].state = KeyState.FAILED
        p.statuses[1].state = KeyState.DISABLED
        grant = p.acquire(NOW, RNG, Ask(reserve=True, max_wait_s=30))
        assert (grant.index, grant.wait_s, grant.refused) == (None, None, "no_usable_key")


class TestBreaker:
    def test_an_open_circuit_refuses_without_choosing(self):
        p = pool(2, breaker=CircuitBreaker(threshold=2, reset_s=10))
        for _ in range(2):
            index = p.acquire(NOW, RNG, Ask()).index
            assert index is not None
            p.release(index, Outcome.SERVER_ERROR, NOW, NO_SIGNAL)
        assert p.breaker.state(NOW) is CircuitState.OPEN
        assert p.acquire(NOW, RNG, Ask()).refused == "circuit_open"
        assert p.acquire(NOW, RNG, Ask(admit=False)).index is not None  # already admitted

    def test_a_half_open_trial_that_finds_no_key_is_given_back(self):
        p = pool(1, breaker=CircuitBreaker(threshold=1, reset_s=10))
        p.acquire(NOW, RNG, Ask())
        p.release(0, Outcome.SERVER_ERROR, NOW, NO_SIGNAL)
        p.statuses[0].state = KeyState.DISABLED
        assert p.acquire(NOW + 10, RNG, Ask()).refused == "no_usable_key"
        p.statuses[0].state = KeyState.ACTIVE
        assert p.acquire(NOW + 10, RNG, Ask()).index == 0  # the trial was not lost


class TestHangingKey:
    def warmed(self) -> KeyPool:
        p = pool(2)
        for index in (0, 1):
            assert p.acquire(NOW, RNG, Ask()).index == index
            p.release(index, Outcome.OK, NOW + 0.01, NO_SIGNAL, latency_s=0.01)
        return p

    def test_a_key_busy_without_answer_is_skipped_before_any_timeout(self):
        p = self.warmed()
        t = NOW + 1
        assert p.acquire(t, RNG, Ask()).index == 0  # this one hangs
        later = t + STALL_FLOOR_S + 0.01
        picks = [p.acquire(later, RNG, Ask()).index for _ in range(4)]
        assert picks == [1, 1, 1, 1]

    def test_not_before_the_threshold(self):
        p = self.warmed()
        t = NOW + 1
        p.acquire(t, RNG, Ask())
        assert p.acquire(t + 0.1, RNG, Ask()).index == 1
        assert p.acquire(t + 0.1, RNG, Ask()).index == 0

    def test_it_is_still_the_last_resort(self):
        p = self.warmed()
        t = NOW + 1
        p.acquire(t, RNG, Ask())
        assert p.acquire(t + 5, RNG, Ask(exclude={1})).index == 0

    def test_an_answer_clears_it(self):
        p = self.warmed()
        t = NOW + 1
        p.acquire(t, RNG, Ask())
        p.release(0, Outcome.OK, t + 2, NO_SIGNAL, latency_s=2)
        assert p.acquire(t + 2, RNG, Ask(preferred=0)).index == 0

    def test_a_cold_pool_judges_nothing(self):
        p = pool(2)
        p.acquire(NOW, RNG, Ask())
        assert p.acquire(NOW + 30, RNG, Ask(preferred=0)).index == 0


class TestSoftQuarantine:
    def test_a_key_that_hung_until_its_timeout_gets_no_burst_afterwards(self):
        p = TestHangingKey().warmed()
        t = NOW + 1
        assert p.acquire(t, RNG, Ask()).index == 0  # hangs until its timeout
        p.release(0, Outcome.TIMEOUT, t + 60, NO_SIGNAL)
        later = t + 60
        picks = []
        for _ in range(10):  # the other key answers each request at once
            index = p.acquire(later, RNG, Ask()).index
            picks.append(index)
            if index == 1:
                p.release(1, Outcome.OK, later, NO_SIGNAL, latency_s=0.01)
        assert picks.count(0) == 1  # one request at a time until it answers again

    def test_its_next_success_lifts_the_quarantine(self):
        p = TestHangingKey().warmed()
        t = NOW + 1
        p.acquire(t, RNG, Ask())
        p.release(0, Outcome.TIMEOUT, t + 60, NO_SIGNAL)
        assert p.acquire(t + 60, RNG, Ask(preferred=0)).index == 0
        p.release(0, Outcome.OK, t + 60.1, NO_SIGNAL, latency_s=0.01)
        picks = [p.acquire(t + 61, RNG, Ask()).index for _ in range(4)]
        assert picks.count(0) == 2  # back in the rotation

    def test_a_rate_limited_key_is_not_quarantined(self):
        p = TestHangingKey().warmed()
        cool(p, 0, 1.0, NOW + 1)
        t = NOW + 100
        assert p.acquire(t, RNG, Ask(preferred=0)).index == 0
        assert p.statuses[0].quiet_since == t  # a fresh clock: judged like any busy key


class TestOneDeadKeyAndTheBreaker:
    def test_a_burst_on_one_dead_key_does_not_open_the_providers_breaker(self):
        # Concurrent requests all reach the dead key before its first failure comes back; only
        # those answered before it was marked failed say something about the provider.
        p = pool(3, breaker=CircuitBreaker(threshold=5, reset_s=60.0))
        for _ in range(6):
            assert p.acquire(NOW, RNG, Ask(preferred=1)).index == 1
        for _ in range(6):
            p.release(1, Outcome.SERVER_ERROR, NOW + 0.01, NO_SIGNAL)
        assert p.statuses[1].state is KeyState.FAILED
        assert p.breaker.state(NOW + 0.02) is CircuitState.CLOSED
        assert p.acquire(NOW + 0.02, RNG, Ask()).index in (0, 2)

    def test_failures_spread_over_keys_still_open_it(self):
        p = pool(3, breaker=CircuitBreaker(threshold=5, reset_s=60.0))
        for i in range(5):  # two keys each failing twice and one once: the provider is unwell
            index = p.acquire(NOW, RNG, Ask(preferred=i % 3)).index
            assert index is not None
            p.release(index, Outcome.SERVER_ERROR, NOW + 0.01, NO_SIGNAL)
        assert p.breaker.state(NOW + 0.02) is CircuitState.OPEN
