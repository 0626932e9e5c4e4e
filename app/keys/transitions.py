"""How one attempt's outcome, or one recovery probe, changes a key's record."""

from __future__ import annotations

from app.keys.learned import learn_into
from app.keys.model import KeyState, KeyStatus, Outcome, RateLimitSignal

DEFAULT_COOLDOWN_S = 1.0
MAX_DEFAULT_COOLDOWN_S = 60.0
FAIL_AFTER_ERRORS = 3
# How long the first request after a cooldown holds the key for itself at most (its answer
# usually comes much sooner and releases the hold).
TRIAL_HOLD_S = 1.0
LATENCY_EWMA_WEIGHT = 0.2
MIN_HEALTH = 0.05
# Outcomes that mean the upstream did not answer at all (no status): they say nothing about
# whether the key is still making progress.
SILENT_OUTCOMES = frozenset(
    {Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.CANCELLED, Outcome.UNUSED}
)
# Outcomes that change nothing but the counts: no request reached the upstream with an answer.
NEUTRAL_OUTCOMES = frozenset({Outcome.CANCELLED, Outcome.UNUSED})


def record_start(status: KeyStatus, at: float, now: float, *, paced: bool = False) -> None:
    """Count a granted request in flight; `at` is when it starts (later than `now` if reserved).

    On a paced key the buckets already space requests out and bound the queue, so the first turn
    after a cooldown is not held, and the learned budget is not spent ahead: with a queue of
    reserved turns in flight it would only ever read zero.
    """
    if status.in_flight == 0 and not _suspect(status):
        status.quiet_since = at
    status.in_flight += 1
    status.requests += 1
    if paced:
        return
    if status.state is KeyState.RATE_LIMITED:
        status.trial_until = at + TRIAL_HOLD_S
    spend_budget(status, now)


def _suspect(status: KeyStatus) -> bool:
    """Failed as a provider (5xx, timeout, connection) since it last succeeded.

    Such a key keeps its old quiet time when it gets busy again, so a key that hung until its
    timeout is judged stalled as soon as it holds a request again: a soft quarantine (other keys
    first, it stays the last resort) that its next success lifts. A 429 alone is not suspect.
    """
    return status.failures > 0 and status.health_factor < 1.0 and status.quiet_since is not None


def record_outcome(
    status: KeyStatus,
    outcome: Outcome,
    now: float,
    signal: RateLimitSignal,
    latency_s: float | None = None,
) -> None:
    """Apply an attempt's result; a disabled key only updates its counters."""
    status.in_flight = max(0, status.in_flight - 1)
    status.trial_until = None
    if outcome is Outcome.UNUSED:
        status.requests = max(0, status.requests - 1)
    if outcome.is_key_failure:
        status.errors += 1
    if outcome not in SILENT_OUTCOMES:
        status.quiet_since = now
    if outcome is Outcome.OK and latency_s is not None:
        status.latency_ewma = blend_latency(status.latency_ewma, latency_s)
    if status.state is KeyState.DISABLED or outcome in NEUTRAL_OUTCOMES:
        return
    _apply(status, outcome, now, signal)
    learn_budget(status, signal, now)
    if outcome is Outcome.OK:
        learn_into(status, signal)  # announced limits pace the key (learned.py)
    exhausted = signal.exhausted_for_s
    if outcome is Outcome.OK and exhausted is not None and exhausted > 0:
        cool_down(status, now, exhausted)


def _apply(status: KeyStatus, outcome: Outcome, now: float, signal: RateLimitSignal) -> None:
    if outcome is Outcome.OK:
        _succeeded(status, now)
    elif outcome is Outcome.RATE_LIMITED:
        status.failures += 1
        announced = signal.retry_after_s
        cool_down(status, now, announced if announced is not None else signal.exhausted_for_s)
    elif outcome is Outcome.AUTH_FAILED:
        _fail(status, auth=True)
    elif outcome is Outcome.QUOTA_EXCEEDED:
        _fail(status, auth=False)  # not a cooldown: no reset is coming (a probe may revive it)
    elif outcome.is_provider_failure:
        status.failures += 1
        status.health_factor = max(MIN_HEALTH, status.health_factor * 0.5)
        if status.failures >= FAIL_AFTER_ERRORS:
            _fail(status, auth=False)


def blend_latency(previous: float | None, sample: float) -> float:
    if previous is None:
        return sample
    return previous + LATENCY_EWMA_WEIGHT * (sample - previous)


def learn_budget(status: KeyStatus, signal: RateLimitSignal, now: float) -> None:
    """Remember what the provider said is left, minus what we sent that it may not have counted.

    Only with a reset time: without one, running the estimate down could never end.
    """
    remaining, reset_s = signal.remaining_requests, signal.reset_requests_s
    if remaining is None or reset_s is None:
        return
    status.budget_left = max(0, remaining - status.in_flight)
    status.budget_reset_at = now + reset_s


def spend_budget(status: KeyStatus, now: float) -> None:
    """One more request against the learned budget; spending the last one cools the key."""
    if status.budget_left is None:
        return
    reset_at = status.budget_reset_at
    if reset_at is None or reset_at <= now:
        status.budget_left = status.budget_reset_at = None  # the window has turned over
        return
    status.budget_left -= 1
    if status.budget_left <= 0:
        status.budget_left = 0
        cool_down(status, now, reset_at - now)


def cool_down(status: KeyStatus, now: float, announced_s: float | None) -> None:
    """Rate-limit the key until the announced reset, or an exponential default when none came."""
    if announced_s is not None:
        until, announced = now + announced_s, True
    else:
        backoff = DEFAULT_COOLDOWN_S * 2 ** max(0, status.failures - 1)
        until, announced = now + min(backoff, MAX_DEFAULT_COOLDOWN_S), False
    if status.state is KeyState.RATE_LIMITED and (status.cooldown_until or 0) > until:
        return
    if status.state in (KeyState.FAILED, KeyState.DISABLED):
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
    if status.state in (KeyState.FAILED, KeyState.RATE_LIMITED) and not _announced_cooling(
        status, now
    ):
        _reactivate(status)


def set_disabled(status: KeyStatus, disabled: bool) -> None:
    """Enable lifts an admin disable only: the evidence kept under it decides what comes back.

    A key known bad (401/403, or repeated errors) stays failed until a probe succeeds; a cooldown
    (its end kept through the disable) runs out as it would have; otherwise the key is active.
    """
    if disabled:
        status.state = KeyState.DISABLED
        status.trial_until = None
    elif status.state is KeyState.DISABLED:
        if status.auth_failed:
            _fail(status, auth=True)
        elif status.cooldown_until is not None:
            status.state = KeyState.RATE_LIMITED
        elif status.failures >= FAIL_AFTER_ERRORS:
            _fail(status, auth=False)
        else:
            _reactivate(status)


def needs_probe(status: KeyStatus, now: float) -> bool:
    """Failed keys, and rate-limited keys whose cooldown had no announced end."""
    if status.state is KeyState.FAILED:
        return True
    return status.state is KeyState.RATE_LIMITED and not status.announced and not status.usable(now)


def _announced_cooling(status: KeyStatus, now: float) -> bool:
    return (
        status.state is KeyState.RATE_LIMITED
        and status.announced
        and (status.cooldown_until or 0) > now
    )


def _succeeded(status: KeyStatus, now: float) -> None:
    status.failures = 0
    status.health_factor = min(1.0, status.health_factor * 2)
    # A success that was sent before a 429 must not end the cooldown that 429 announced.
    if status.state is KeyState.RATE_LIMITED and not _announced_cooling(status, now):
        status.state = KeyState.ACTIVE
        status.cooldown_until = None
        status.announced = False


def _fail(status: KeyStatus, *, auth: bool) -> None:
    status.state = KeyState.FAILED
    status.cooldown_until = None
    status.announced = False
    status.trial_until = None
    status.auth_failed = auth


def _reactivate(status: KeyStatus) -> None:
    status.state = KeyState.ACTIVE
    status.cooldown_until = None
    status.announced = False
    status.trial_until = None
    status.failures = 0
    status.auth_failed = False
    status.budget_left = status.budget_reset_at = None
    status.health_factor = max(status.health_factor, 0.5)
