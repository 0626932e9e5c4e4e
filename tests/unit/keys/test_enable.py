"""Admin enable lifts a disable, never the evidence: bad keys stay failed, cooldowns run out."""

from __future__ import annotations

from app.keys.model import NO_SIGNAL, KeyState, KeyStatus, Outcome, RateLimitSignal
from app.keys.transitions import record_outcome, record_probe, set_disabled

NOW = 1_000.0


def after(*outcomes: Outcome, signal: RateLimitSignal = NO_SIGNAL) -> KeyStatus:
    status = KeyStatus()
    for outcome in outcomes:
        status.in_flight += 1
        record_outcome(status, outcome, NOW, signal)
    return status


def disabled_then_enabled(status: KeyStatus) -> KeyStatus:
    set_disabled(status, True)
    assert status.state is KeyState.DISABLED
    set_disabled(status, False)
    return status


def test_a_key_known_invalid_stays_failed_until_a_probe_succeeds() -> None:
    status = disabled_then_enabled(after(Outcome.AUTH_FAILED))
    assert status.state is KeyState.FAILED
    record_probe(status, ok=True, auth_failed=False, now=NOW + 1)
    assert status.usable(NOW + 1)  # revived by the probe


def test_a_key_failed_by_repeated_errors_stays_failed() -> None:
    status = disabled_then_enabled(after(*[Outcome.SERVER_ERROR] * 3))
    assert status.state is KeyState.FAILED


def test_an_announced_cooldown_runs_out() -> None:
    status = disabled_then_enabled(
        after(Outcome.RATE_LIMITED, signal=RateLimitSignal(retry_after_s=60.0))
    )
    assert not status.usable(NOW + 59)
    assert status.cooldown_until == NOW + 60
    assert status.usable(NOW + 60)


def test_a_healthy_key_comes_back_active() -> None:
    status = disabled_then_enabled(after(Outcome.OK))
    assert status.state is KeyState.ACTIVE
    assert status.usable(NOW)


def test_enable_on_a_key_that_is_not_disabled_changes_nothing() -> None:
    status = after(Outcome.AUTH_FAILED)
    set_disabled(status, False)
    assert status.state is KeyState.FAILED
