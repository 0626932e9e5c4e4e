"""What each attempt outcome and each response's rate-limit headers do to a key."""

from __future__ import annotations

import pytest

from app.keys.model import NO_SIGNAL, KeyState, KeyStatus, Outcome, RateLimitSignal
from app.keys.signals import parse_signal
from app.keys.transitions import (
    FAIL_AFTER_ERRORS,
    TRIAL_HOLD_S,
    needs_probe,
    record_outcome,
    record_probe,
    record_start,
    set_disabled,
)

NOW = 50_000.0


def attempt(
    status: KeyStatus,
    outcome: Outcome,
    signal: RateLimitSignal = NO_SIGNAL,
    *,
    at: float = NOW,
    latency_s: float | None = None,
) -> KeyStatus:
    record_start(status, at, at)
    record_outcome(status, outcome, at, signal, latency_s)
    return status


class TestRateLimits:
    def test_a_429_cools_the_key_until_its_retry_after(self):
        status = attempt(KeyStatus(), Outcome.RATE_LIMITED, parse_signal({"retry-after": "7"}, NOW))
        assert (status.state, status.cooldown_until, status.announced) == (
            KeyState.RATE_LIMITED,
            NOW + 7,
            True,
        )
        assert not status.usable(NOW + 6.9)
        assert status.usable(NOW + 7)

    @pytest.mark.parametrize(
        ("headers", "seconds"),
        [
            ({"retry-after-ms": "250"}, 0.25),
            ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m30s"}, 90),
            ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6.5s"}, 6.5),
        ],
    )
    def test_a_429_without_retry_after_uses_the_announced_reset(
        self, headers: dict[str, str], seconds: float
    ):
        status = attempt(KeyStatus(), Outcome.RATE_LIMITED, parse_signal(headers, NOW))
        assert status.cooldown_until == pytest.approx(NOW + seconds)
        assert status.announced

    def test_a_silent_429_backs_off_exponentially_and_is_left_to_probes(self):
        status = KeyStatus()
        ends = []
        for n in range(4):
            now = NOW + 100 * n
            attempt(status, Outcome.RATE_LIMITED, at=now)
            ends.append(status.cooldown_until - now)  # type: ignore[operator]
        assert ends == [1.0, 2.0, 4.0, 8.0]
        assert not status.announced
        assert needs_probe(status, NOW + 300)

    def test_a_200_announcing_zero_remaining_cools_the_key_until_the_reset(self):
        headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "250ms"}
        status = attempt(KeyStatus(), Outcome.OK, parse_signal(headers, NOW))
        assert status.state is KeyState.RATE_LIMITED
        assert status.cooldown_until == pytest.approx(NOW + 0.25)

    def test_a_stale_success_does_not_end_an_announced_cooldown(self):
        status = KeyStatus()
        record_start(status, NOW, NOW)  # sent before the 429 came back
        attempt(status, Outcome.RATE_LIMITED, RateLimitSignal(retry_after_s=30))
        record_outcome(status, Outcome.OK, NOW + 1, NO_SIGNAL)
        assert status.state is KeyState.RATE_LIMITED
        assert status.cooldown_until == NOW + 30

    def test_the_first_request_after_a_cooldown_holds_the_key_until_it_answers(self):
        status = attempt(KeyStatus(), Outcome.RATE_LIMITED, RateLimitSignal(retry_after_s=1))
        record_start(status, NOW + 1, NOW + 1)
        assert status.trial_until == NOW + 1 + TRIAL_HOLD_S
        record_outcome(status, Outcome.OK, NOW + 1.1, NO_SIGNAL)
        assert status.trial_until is None
        assert status.state is KeyState.ACTIVE


class TestLearnedBudget:
    def test_remaining_requests_are_counted_down_by_what_we_send(self):
        headers = {"x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "10s"}
        status = attempt(KeyStatus(), Outcome.OK, parse_signal(headers, NOW))
        assert status.budget_left == 2
        record_start(status, NOW + 1, NOW + 1)
        assert status.usable(NOW + 1)
        record_start(status, NOW + 1, NOW + 1)  # the last one the provider allowed
        assert not status.usable(NOW + 1)
        assert status.state is KeyState.RATE_LIMITED
        assert status.cooldown_until == pytest.approx(NOW + 10)

    def test_requests_in_flight_are_not_yet_in_the_providers_count(self):
        headers = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}
        status = KeyStatus()
        for _ in range(3):
            record_start(status, NOW, NOW)
        record_outcome(status, Outcome.OK, NOW, parse_signal(headers, NOW))
        assert status.budget_left == 1

    def test_an_estimate_past_its_reset_is_dropped(self):
        headers = {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "1s"}
        status = attempt(KeyStatus(), Outcome.OK, parse_signal(headers, NOW))
        record_start(status, NOW + 2, NOW + 2)
        assert (status.budget_left, status.state) == (None, KeyState.ACTIVE)


class TestFailures:
    def test_401_fails_the_key_at_once(self):
        status = attempt(KeyStatus(), Outcome.AUTH_FAILED)
        assert (status.state, status.auth_failed, status.errors) == (KeyState.FAILED, True, 1)

    def test_repeated_server_errors_fail_the_key(self):
        status = KeyStatus()
        for _ in range(FAIL_AFTER_ERRORS - 1):
            attempt(status, Outcome.SERVER_ERROR)
        assert status.usable(NOW)
        attempt(status, Outcome.TIMEOUT)
        assert status.state is KeyState.FAILED

    def test_400_and_404_leave_the_key_alone(self):
        status = attempt(attempt(KeyStatus(), Outcome.BAD_REQUEST), Outcome.NOT_FOUND)
        assert (status.state, status.errors, status.requests) == (KeyState.ACTIVE, 0, 2)

    def test_a_cancelled_request_only_gives_its_slot_back(self):
        status = attempt(KeyStatus(), Outcome.CANCELLED)
        assert (status.in_flight, status.errors, status.state) == (0, 0, KeyState.ACTIVE)


class TestLatency:
    def test_successes_feed_the_latency_average_and_mark_progress(self):
        status = attempt(KeyStatus(), Outcome.OK, at=NOW, latency_s=0.1)
        attempt(status, Outcome.OK, at=NOW + 1, latency_s=0.6)
        assert status.latency_ewma == pytest.approx(0.2)
        assert status.quiet_since == NOW + 1

    def test_a_timeout_is_not_progress(self):
        status = KeyStatus()
        record_start(status, NOW, NOW)
        record_start(status, NOW + 1, NOW + 1)
        record_outcome(status, Outcome.TIMEOUT, NOW + 5, NO_SIGNAL)
        assert status.quiet_since == NOW


class TestProbesAndAdmin:
    def test_a_probe_revives_a_failed_key(self):
        status = attempt(KeyStatus(), Outcome.AUTH_FAILED)
        record_probe(status, ok=True, auth_failed=False, now=NOW)
        assert status.state is KeyState.ACTIVE

    def test_a_probe_answering_401_keeps_the_key_failed(self):
        status = attempt(KeyStatus(), Outcome.AUTH_FAILED)
        record_probe(status, ok=False, auth_failed=True, now=NOW)
        assert status.state is KeyState.FAILED

    def test_a_probe_never_ends_an_announced_cooldown(self):
        status = attempt(KeyStatus(), Outcome.RATE_LIMITED, RateLimitSignal(retry_after_s=60))
        assert not needs_probe(status, NOW)
        record_probe(status, ok=True, auth_failed=False, now=NOW + 1)
        assert status.state is KeyState.RATE_LIMITED

    def test_a_probe_ends_a_guessed_cooldown(self):
        status = attempt(KeyStatus(), Outcome.RATE_LIMITED)
        record_probe(status, ok=True, auth_failed=False, now=NOW + 0.5)
        assert status.usable(NOW + 0.5)

    def test_probes_do_not_count_as_requests(self):
        status = KeyStatus()
        record_probe(status, ok=False, auth_failed=False, now=NOW)
        assert (status.requests, status.errors) == (0, 0)

    def test_disable_and_enable(self):
        status = attempt(KeyStatus(), Outcome.RATE_LIMITED, RateLimitSignal(retry_after_s=60))
        set_disabled(status, True)
        record_probe(status, ok=True, auth_failed=False, now=NOW)
        attempt(status, Outcome.OK)
        assert status.state is KeyState.DISABLED
        set_disabled(status, False)
        assert not status.usable(NOW)  # enable lifts the disable, not the announced cooldown
        assert status.usable(NOW + 60)


class TestQuotaExceeded:
    """A 429 that says the quota is out: the key fails (no reset is coming), nothing cools."""

    def test_the_key_is_failed_not_cooled(self):
        status = KeyStatus(in_flight=1)
        record_outcome(status, Outcome.QUOTA_EXCEEDED, 100.0, RateLimitSignal(retry_after_s=5))
        assert status.state is KeyState.FAILED
        assert status.cooldown_until is None
        assert not status.auth_failed
        assert status.errors == 1

    def test_it_counts_as_an_error_but_never_feeds_the_breaker(self):
        assert Outcome.QUOTA_EXCEEDED.is_key_failure
        assert not Outcome.QUOTA_EXCEEDED.is_provider_failure
