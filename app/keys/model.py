"""Key states, attempt outcomes and the mutable per-key record the pool keeps."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
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
    QUOTA_EXCEEDED = "quota_exceeded"  # a 429 that says the account is out of quota: key failed
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    CANCELLED = "cancelled"
    # A grant handed back with no request sent (a spare grant that expired, app/state/spares.py):
    # neutral as CANCELLED, and the request its acquire counted is taken back.
    UNUSED = "unused"

    @property
    def is_key_failure(self) -> bool:
        """Failures that say something about the key or provider (and so count as errors)."""
        return self in _KEY_FAILURES

    @property
    def is_provider_failure(self) -> bool:
        """Failures that say the provider itself is unwell; these feed the circuit breaker."""
        return self in _PROVIDER_FAILURES


_PROVIDER_FAILURES = frozenset({Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR})
_KEY_FAILURES = _PROVIDER_FAILURES | {
    Outcome.RATE_LIMITED,
    Outcome.AUTH_FAILED,
    Outcome.QUOTA_EXCEEDED,
}


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
    """Runtime record of one key; all times are unix seconds.

    `announced` marks a cooldown end the provider gave. `trial_until` holds a key that just left
    a cooldown for the one request that goes first (others wait for its answer, at most until
    then). `budget_left` is the learned estimate of requests left (x-ratelimit-remaining minus
    what is in flight since). `learned_*` are the announced limits and their inferred windows
    (they pace the key when nothing is configured). `tat_*` are the pacing buckets'
    theoretical arrival times (GCRA).
    `quiet_since` is when the key last answered, or went from idle to busy (hang detection).
    """

    state: KeyState = KeyState.ACTIVE
    cooldown_until: float | None = None
    announced: bool = False
    failures: int = 0
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    health_factor: float = 1.0
    auth_failed: bool = False
    trial_until: float | None = None
    budget_left: int | None = None
    budget_reset_at: float | None = None
    tat_requests: float = 0.0
    tat_tokens: float = 0.0
    quiet_since: float | None = None
    latency_ewma: float | None = None
    # Learned limits (x-ratelimit-limit-* on successes): L per window seconds, None: not announced.
    learned_requests: int | None = None
    learned_requests_window: float | None = None
    learned_tokens: int | None = None
    learned_tokens_window: float | None = None

    def effective_state(self, now: float) -> KeyState:
        until = self.cooldown_until
        if self.state is KeyState.RATE_LIMITED and until is not None and now >= until:
            return KeyState.ACTIVE
        return self.state

    def usable(self, now: float) -> bool:
        return self.effective_state(now) is KeyState.ACTIVE


@dataclass(frozen=True, slots=True)
class Ask:
    """What one acquire asks of a provider: which keys, what it costs, how long it may wait.

    `reserve` lets the pool hand out a key that is free only later: a pacing slot within
    `max_queue_s`, or the first turn after a cooldown within `max_wait_s`. `admit` passes the
    provider's circuit breaker first (a request's first acquire on that provider). `avoid`
    counts keys already taken by sibling requests of a batch: the fewest-used are preferred.
    """

    exclude: Collection[int] = ()
    preferred: int | None = None
    avoid: Mapping[int, int] = field(default_factory=dict)
    tokens: int = 0
    reserve: bool = False
    max_wait_s: float = 0.0
    max_queue_s: float = 0.0
    admit: bool = True


@dataclass(frozen=True, slots=True)
class Grant:
    """The answer to an Ask: a key (maybe `delay_s` from now), or why not.

    When `index` is None: `wait_s` is how long until some key could serve at all (for
    Retry-After), `reservable_s` how long until one the same Ask with `reserve` would get, and
    `refused` one of "circuit_open", "rate_limited", "no_usable_key".
    `after_cooldown` marks a reserved turn behind a cooldown on an unpaced key (the runner adds
    jitter to it; a paced key's turns are spaced already).
    """

    index: int | None
    delay_s: float = 0.0
    after_cooldown: bool = False
    wait_s: float | None = None
    reservable_s: float | None = None
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """What one granted attempt did to its key: the argument of every store's `release`.

    `latency_s` is how long a successful attempt took (it feeds hang detection).
    """

    provider: str
    index: int
    outcome: Outcome
    now: float
    signal: RateLimitSignal = NO_SIGNAL
    latency_s: float | None = None
