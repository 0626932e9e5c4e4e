"""How one attempt's outcome, or one recovery probe, changes a key's record."""

from __future__ import annotations

from app.keys.model import KeyState, KeyStatus, Outcome, RateLimitSignal

DEFAULT_COOLDOWN_S = 1.0
MAX_DEFAULT_COOLDOWN_S = 60.0
FAIL_AFTER_ERRORS = 3
_MIN_HEALTH = 0.05


def record_start(status: KeyStatus) -> None:
    status.in_flight += 1
    status.requests += 1


def record_outcome(
    status: KeyStatus, outcome: Outcome, now: float, signal: RateLimitSignal
) -> None:
    """Apply an attempt's result; a disabled key only updates its counters."""
    status.in_flight = max(0, status.in_flight - 1)
    if outcome.is_key_failure:
        status.errors += 1
    if status.state is KeyState.DISABLED or outcome is Outcome.CANCELLED:
        return
    if outcome is Outcome.OK:
        _succeeded(status)
    elif outcome is Outcome.RATE_LIMITED:
        status.failures += 1
        cool_down(status, now, signal.retry_after_s or signal.exhausted_for_s)
    elif outcome is Outcome.AUTH_FAILED:
        _fail(status, auth=True)
    elif outcome.is_provider_failure:
        status.failures += 1
        status.health_factor = max(_MIN_HEALTH, status.health_factor * 0.5)
        if status.failures >= FAIL_AFTER_ERRORS:
            _fail(status, auth=False)
    exhausted = signal.exhausted_for_s
    if outcome is Outcome.OK and exhausted is not None and exhausted > 0:
        cool_down(status, now, exhausted)


def cool_down(status: KeyStatus, now: float, announced_s: float | None) -> None:
    """Rate-limit the key until the announced reset, or an exponential default when none came."""
    if announced_s is not None:
        until, announced = now + announced_s, True
    else:
        backoff = DEFAULT_COOLDOWN_S * 2 ** max(0, status.failures - 1)
        until, announced = now + min(backoff, MAX_DEFAULT_COOLDOWN_S), False
    if status.state is KeyState.RATE_LIMITED and (status.cooldown_until or 0) > until:
        return
    status.state = KeyState.RATE_LIMITED
    status.cooldown_until = until
    status.announced = announced


def record_probe(status: KeyStatus, *, ok: bool, auth_failed: bool, now: float) -> None:
    """A probe may revive a failed key or end an unannounced cooldown, never an announced one."""
    if status.state is KeyState.DISABLED:
        return
    if auth_failed:
        _fail(status, auth=True)
        return
    if not ok:
        return
    cooling_announced = (
        status.state is KeyState.RATE_LIMITED
        and status.announced
        and (status.cooldown_until or 0) > now
    )
    if status.state in (KeyState.FAILED, KeyState.RATE_LIMITED) and not cooling_announced:
        _reactivate(status)


def set_disabled(status: KeyStatus, disabled: bool) -> None:
    if disabled:
        status.state = KeyState.DISABLED
    elif status.state is KeyState.DISABLED:
        _reactivate(status)


def needs_probe(status: KeyStatus, now: float) -> bool:
    """Failed keys, and rate-limited keys whose cooldown had no announced end."""
    if status.state is KeyState.FAILED:
        return True
    return status.state is KeyState.RATE_LIMITED and not status.announced and not status.usable(now)


def _succeeded(status: KeyStatus) -> None:
    status.failures = 0
    status.health_factor = min(1.0, status.health_factor * 2)
    if status.state is KeyState.RATE_LIMITED:
        status.state = KeyState.ACTIVE
        status.cooldown_until = None
        status.announced = False


def _fail(status: KeyStatus, *, auth: bool) -> None:
    status.state = KeyState.FAILED
    status.cooldown_until = None
    status.announced = False
    status.auth_failed = auth


def _reactivate(status: KeyStatus) -> None:
    status.state = KeyState.ACTIVE
    status.cooldown_until = None
    status.announced = False
    status.failures = 0
    status.auth_failed = False
    status.health_factor = max(status.health_factor, 0.5)
