"""Key states, attempt outcomes and the mutable per-key record the pool keeps."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class KeyState(StrEnum):
    ACTIVE = "active"
    RATE_LIMITED = "rate_limited"
    FAILED = "failed"
    DISABLED = "disabled"


class Outcome(StrEnum):
    """What one upstream attempt tells about the key that made it."""

    OK = "ok"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CANCELLED = "cancelled"

    @property
    def is_key_failure(self) -> bool:
        """Failures that say something about the key or provider (and so count as errors)."""
        return self in _KEY_FAILURES

    @property
    def is_provider_failure(self) -> bool:
        """Failures that say the provider itself is unwell; these feed the circuit breaker."""
        return self in _PROVIDER_FAILURES


_PROVIDER_FAILURES = frozenset({Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR})
_KEY_FAILURES = _PROVIDER_FAILURES | {Outcome.RATE_LIMITED, Outcome.AUTH_FAILED}


@dataclass(frozen=True, slots=True)
class RateLimitSignal:
    """What a response's headers announced; times are seconds from the response."""

    retry_after_s: float | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    limit_tokens: int | None = None

    @property
    def exhausted_for_s(self) -> float | None:
        """How long the provider said this key has nothing left, if it said so."""
        waits = []
        if self.remaining_requests == 0 and self.reset_requests_s is not None:
            waits.append(self.reset_requests_s)
        if self.remaining_tokens == 0 and self.reset_tokens_s is not None:
            waits.append(self.reset_tokens_s)
        return max(waits) if waits else None


NO_SIGNAL = RateLimitSignal()


@dataclass(slots=True)
class KeyStatus:
    """Runtime record of one key. `cooldown_until` is unix seconds; `announced` marks a provider-given end."""

    state: KeyState = KeyState.ACTIVE
    cooldown_until: float | None = None
    announced: bool = False
    failures: int = 0
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    health_factor: float = 1.0
    auth_failed: bool = False

    def effective_state(self, now: float) -> KeyState:
        until = self.cooldown_until
        if self.state is KeyState.RATE_LIMITED and until is not None and now >= until:
            return KeyState.ACTIVE
        return self.state

    def usable(self, now: float) -> bool:
        return self.effective_state(now) is KeyState.ACTIVE
