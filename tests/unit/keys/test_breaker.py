"""The per-provider circuit breaker's transitions, with an injected clock."""

from __future__ import annotations

import pytest

from app.keys.breaker import CircuitBreaker, CircuitState
from app.keys.model import Outcome

NOW = 1_000.0


def opened(threshold: int = 3, reset_s: float = 60.0) -> CircuitBreaker:
    breaker = CircuitBreaker(threshold, reset_s)
    for _ in range(threshold):
        assert breaker.allow(NOW)
        breaker.record(Outcome.SERVER_ERROR, NOW)
    return breaker


class TestClosed:
    def test_opens_after_the_threshold_of_consecutive_failures(self):
        breaker = CircuitBreaker(threshold=3)
        for outcome in (Outcome.SERVER_ERROR, Outcome.TIMEOUT):
            breaker.record(outcome, NOW)
        assert breaker.state(NOW) is CircuitState.CLOSED
        breaker.record(Outcome.CONNECTION_ERROR, NOW)
        assert breaker.state(NOW) is CircuitState.OPEN

    def test_a_success_resets_the_count(self):
        breaker = CircuitBreaker(threshold=2)
        breaker.record(Outcome.SERVER_ERROR, NOW)
        breaker.record(Outcome.OK, NOW)
        breaker.record(Outcome.SERVER_ERROR, NOW)
        assert breaker.state(NOW) is CircuitState.CLOSED

    @pytest.mark.parametrize(
        "outcome",
        [Outcome.RATE_LIMITED, Outcome.AUTH_FAILED, Outcome.BAD_REQUEST, Outcome.NOT_FOUND],
    )
    def test_key_matters_do_not_count(self, outcome: Outcome):
        breaker = CircuitBreaker(threshold=1)
        breaker.record(outcome, NOW)
        assert breaker.state(NOW) is CircuitState.CLOSED


class TestOpen:
    def test_refuses_while_open(self):
        breaker = opened(reset_s=60)
        assert not breaker.allow(NOW + 59.9)
        assert breaker.state(NOW + 59.9) is CircuitState.OPEN

    def test_half_opens_after_the_reset_with_a_single_trial(self):
        breaker = opened(reset_s=60)
        assert breaker.state(NOW + 60) is CircuitState.HALF_OPEN
        assert breaker.allow(NOW + 60)
        assert not breaker.allow(NOW + 60.1)  # the trial is still out

    def test_a_successful_trial_closes_it(self):
        breaker = opened()
        assert breaker.allow(NOW + 60)
        breaker.record(Outcome.OK, NOW + 61)
        assert breaker.state(NOW + 61) is CircuitState.CLOSED
        assert breaker.allow(NOW + 61)
        assert breaker.allow(NOW + 61)

    def test_a_failed_trial_opens_it_for_another_period(self):
        breaker = opened(reset_s=60)
        assert breaker.allow(NOW + 60)
        breaker.record(Outcome.TIMEOUT, NOW + 62)
        assert breaker.state(NOW + 62) is CircuitState.OPEN
        assert breaker.state(NOW + 121.9) is CircuitState.OPEN
        assert breaker.state(NOW + 122) is CircuitState.HALF_OPEN

    def test_a_cancelled_trial_lets_the_next_request_try(self):
        breaker = opened()
        assert breaker.allow(NOW + 60)
        breaker.cancel_trial()
        assert breaker.allow(NOW + 60)
