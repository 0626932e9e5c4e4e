"""Per-provider circuit breaker: open after N consecutive provider failures, one trial after a pause."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.keys.model import Outcome


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """Counts consecutive 5xx/timeout/connection failures; rate limits and bad keys are key matters.

    Closed → open after `threshold` failures in a row; open → half-open once `reset_s` passed;
    half-open admits one trial: its success closes the breaker, its failure re-opens it.
    """

    threshold: int = 5
    reset_s: float = 60.0
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False

    def state(self, now: float) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if now - self.opened_at >= self.reset_s:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self, now: float) -> bool:
        """Closed lets all through; half-open lets exactly one trial through at a time."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    def cancel_trial(self) -> None:
        """The admitted trial found no key to try; the next request may make it instead."""
        self.trial_in_flight = False

    def record(self, outcome: Outcome, now: float) -> None:
        if outcome is Outcome.OK:
            self.failures = 0
            self.opened_at = None
        elif outcome.is_provider_failure:
            self.failures += 1
            reopening = self.opened_at is not None and self.trial_in_flight
            if reopening or self.failures >= self.threshold:
                self.opened_at = now
        self.trial_in_flight = False
