"""One provider's keys and breaker: which key serves next, when, and what an attempt did to it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from app.keys.breaker import CircuitBreaker
from app.keys.learned import has_learned, pace_of
from app.keys.model import Ask, Grant, KeyState, KeyStatus, Outcome, RateLimitSignal
from app.keys.pacing import Pace, slot_at, take
from app.keys.shared_limit import (
    SharedLimitDetector,
    SharedMode,
    announced_reset,
    cool_all,
    has_own_budget,
)
from app.keys.stall import is_stalled
from app.keys.strategies import Strategy, Weighted
from app.keys.transitions import blend_latency, record_outcome, record_start


class Wait(Enum):
    """Why a key is not free now: a pacing budget, a cooldown, or a held first turn."""

    NONE = "none"
    BUDGET = "budget"
    COOLDOWN = "cooldown"
    HELD = "held"


@dataclass(frozen=True, slots=True)
class Ready:
    at: float
    wait: Wait


class KeyPool:
    """Selection state for one provider. Single-threaded by design: the event loop serialises calls.

    `acquire` is the whole decision of one attempt (breaker, strategy, cooldowns, budgets, hang
    detection, reservation), so a shared backend can run it as one atomic step.
    """

    def __init__(
        self,
        size: int,
        strategy: Strategy,
        *,
        pace: Pace | None = None,
        breaker: CircuitBreaker | None = None,
        shared_limit: SharedMode = "auto",
    ) -> None:
        self.statuses = [KeyStatus() for _ in range(size)]
        self.strategy = strategy
        self.pace = pace or Pace()
        self.breaker = breaker or CircuitBreaker()
        self.shared = SharedLimitDetector(shared_limit)  # <P>_SHARED_LIMIT
        self._cursor = 0
        self.latency_ewma: float | None = None

    def __len__(self) -> int:
        return len(self.statuses)

    @property
    def cursor(self) -> int:
        """The rotation point, read modulo the key count: a resize keeps the stored value (as
        the shared store keeps its own until a choice moves it), so both agree after a key list
        shrinks and grows again."""
        return self._cursor % max(1, len(self.statuses))

    @cursor.setter
    def cursor(self, value: int) -> None:
        self._cursor = value

    def acquire(self, now: float, rng: random.Random, ask: Ask) -> Grant:
        """Pass the breaker (when `ask.admit`), then choose; a half-open trial that found no key
        is handed back so the next request can make it."""
        if ask.admit and not self.breaker.allow(now):
            return Grant(None, refused="circuit_open")
        grant = self.choose(now, rng, ask)
        if grant.index is None and ask.admit:
            self.breaker.cancel_trial()
        return grant

    def release(
        self,
        index: int,
        outcome: Outcome,
        now: float,
        signal: RateLimitSignal,
        latency_s: float | None = None,
    ) -> None:
        status = self.statuses[index]
        known_bad = status.state is KeyState.FAILED
        unknown = not has_learned(status)
        own_budget = has_own_budget(status, now)  # before this answer's remaining replaces it
        record_outcome(status, outcome, now, signal, latency_s)
        if unknown and outcome is Outcome.OK:
            pace = self._pace(status)
            if pace is not self.pace and pace.paced:
                take(status, pace, 0, now)  # the answer that taught the limit was a start too
        if outcome is Outcome.OK and latency_s is not None:
            self.latency_ewma = blend_latency(self.latency_ewma, latency_s)
        # One dead key's requests already in flight when it was marked failed say nothing more
        # about the provider: counted, a burst on that key alone opened the breaker for all.
        if known_bad and outcome.is_provider_failure:
            outcome = Outcome.CANCELLED  # neutral: ends a trial, neither counts nor resets
        self.breaker.record(outcome, now)
        if outcome is Outcome.RATE_LIMITED:
            # An account-wide limit cools every key until its reset (shared_limit.py).
            until = self.shared.observe(index, now, announced_reset(signal, now), own_budget)
            if until is not None:
                cool_all(self.statuses, until, now)

    def choose(self, now: float, rng: random.Random, ask: Ask) -> Grant:
        """A key free now; else, if `ask.reserve`, the earliest turn within the ask's bounds."""
        ready = self._readiness(now, ask.tokens)
        open_ = {i: r for i, r in ready.items() if i not in ask.exclude}
        free = [i for i, r in open_.items() if r.at <= now and r.wait is not Wait.HELD]
        if free:
            index = self._pick(free, now, rng, ask)
            self._start(index, now, now, ask.tokens)
            return Grant(index)
        turns = sorted(
            (r.at, self._distance(i), i, r.wait)
            for i, r in open_.items()
            if _within(r, now, ask) and not self._stalled(i, now)
        )
        if turns and ask.reserve:
            at, _, index, wait = turns[0]
            # Jitter spreads waiters let loose by one reset; a paced key's turns are spaced
            # already, and one sent late would crowd the turns booked after it.
            jitter = wait is Wait.COOLDOWN and not self._pace(self.statuses[index]).paced
            self._start(index, at, now, ask.tokens)
            return Grant(index, delay_s=at - now, after_cooldown=jitter)
        # Retry-After counts every key, tried ones included: "until the first key is usable".
        first = min((r.at for r in ready.values()), default=None)
        return Grant(
            None,
            wait_s=None if first is None else max(0.0, first - now),
            reservable_s=turns[0][0] - now if turns else None,
            refused="no_usable_key" if first is None else "rate_limited",
        )

    def ready_at(self, index: int, now: float, tokens: int = 0) -> Ready | None:
        """When this key could start a request; None when it will not by itself (failed, disabled)."""
        status = self.statuses[index]
        if status.state in (KeyState.FAILED, KeyState.DISABLED):
            return None
        at, wait = now, Wait.NONE
        if status.state is KeyState.RATE_LIMITED:
            held = status.trial_until
            if held is not None and held > now:
                return Ready(max(held, status.cooldown_until or now), Wait.HELD)
            until = status.cooldown_until
            if until is None:  # cooling with no end: only a recovery probe brings it back
                return None
            if until > now:
                at, wait = until, Wait.COOLDOWN
        pace = self._pace(status)
        if pace.paced:
            slot = slot_at(status, pace, tokens, now)
            if slot > at:
                at, wait = slot, Wait.BUDGET
        return Ready(at, wait)

    def recheck(self, index: int, now: float, tokens: int = 0) -> float:
        """Seconds a reserved turn must still wait: the key may have announced a reset since.

        A turn is booked before earlier requests' answers are in; one of them may have said
        "remaining 0 until t", and going anyway would be a certain 429. On a paced key a reset
        within `Pace.request_slip` keeps the turn's slot: it only starts that much later (at
        full load a provider's sliding window says "0 left, back in a few ms" about most
        turns, and booking each of them again lost the slot). A longer one books the turn
        again at the end of the key's queue: every turn that fell inside the cooldown would
        otherwise start at its end in one burst.
        """
        status = self.statuses[index]
        until = status.cooldown_until
        cooling = status.state is KeyState.RATE_LIMITED and status.announced
        if not cooling or until is None or until <= now:
            return 0.0
        pace = self._pace(status)
        if not pace.paced or until - now <= pace.request_slip:
            return until - now
        at = max(until, slot_at(status, pace, tokens, now))
        take(status, pace, tokens, at)
        return at - now

    def mirror_grant(self, index: int, tokens: int, at: float, budget: Pace) -> None:
        """Follow a grant another store made for this process (Redis), so that an outage starts
        from this process's own picture of its requests: in flight, and the budget they took."""
        status = self.statuses[index]
        status.in_flight += 1
        take(status, pace_of(budget, status), tokens, at)

    def mirror_release(self, index: int) -> None:
        """The mirrored grant ended in the other store."""
        status = self.statuses[index]
        status.in_flight = max(0, status.in_flight - 1)

    def load_shared(
        self,
        statuses: Sequence[KeyStatus],
        breaker: CircuitBreaker,
        cursor: int,
        latency_ewma: float | None,
    ) -> None:
        """Take the shared state (keys, breaker, cursor, pool latency), keeping this process's
        own in-flight counts: the local pool must know only the requests it would release."""
        for local, shared in zip(self.statuses, statuses, strict=False):
            in_flight = local.in_flight
            for name in _STATUS_FIELDS:
                setattr(local, name, getattr(shared, name))
            local.in_flight = in_flight
        self.breaker.failures = breaker.failures
        self.breaker.opened_at = breaker.opened_at
        self.cursor = cursor % max(1, len(self))
        self.latency_ewma = latency_ewma

    def resize(
        self, moved_from: Sequence[int | None], weights: Sequence[float] | None = None
    ) -> None:
        """A new key list (a vault key added or deleted): `moved_from[i]` is the old index of the
        key now at i (None: a new key). State follows its key, not its position; a new key
        starts fresh; the breaker, pool latency and rotation point stay. The weighted strategy
        takes `weights` (one per key now) when given."""
        old = self.statuses
        self.statuses = [
            old[i] if i is not None and 0 <= i < len(old) else KeyStatus() for i in moved_from
        ]
        # The stored cursor stays (`cursor` reads it modulo the new key count).
        # The detector (and its verdict) stays: learned limits, in KeyStatus, moved with their
        # keys, and an account limit is split by the new number of keys (`_pace`).
        self.shared.renumber(moved_from)
        if weights is not None and isinstance(self.strategy, Weighted):
            self.strategy = Weighted(weights)

    def _readiness(self, now: float, tokens: int) -> dict[int, Ready]:
        ready = {}
        for index in range(len(self.statuses)):
            r = self.ready_at(index, now, tokens)
            if r is not None:
                ready[index] = r
        return ready

    def _pick(self, free: list[int], now: float, rng: random.Random, ask: Ask) -> int:
        """Healthy before hanging, batch siblings' keys last, the user's key first, then strategy."""
        candidates = [i for i in free if not self._stalled(i, now)] or free
        if ask.avoid:
            least = min(ask.avoid.get(i, 0) for i in candidates)
            candidates = [i for i in candidates if ask.avoid.get(i, 0) == least]
        if ask.preferred is not None and ask.preferred in candidates:
            return ask.preferred
        index = self.strategy.pick(candidates, self.statuses, self.cursor, rng)
        self.cursor = (index + 1) % len(self.statuses)
        return index

    def _start(self, index: int, at: float, now: float, tokens: int) -> None:
        status = self.statuses[index]
        pace = self._pace(status)
        record_start(status, at, now, paced=pace.paced)
        if pace.paced:
            take(status, pace, tokens, at)

    def _pace(self, status: KeyStatus) -> Pace:
        """A key's pace; learned limits of an account-wide limited provider are split by key."""
        return pace_of(self.pace, status, len(self.statuses) if self.shared.seen else 1)

    def _stalled(self, index: int, now: float) -> bool:
        return is_stalled(self.statuses[index], now, self.latency_ewma)

    def _distance(self, index: int) -> int:
        return (index - self.cursor) % len(self.statuses)


_STATUS_FIELDS = tuple(f.name for f in dataclasses.fields(KeyStatus))


def _within(ready: Ready, now: float, ask: Ask) -> bool:
    if ready.wait is Wait.BUDGET:
        return ready.at - now <= ask.max_queue_s
    if ready.wait is Wait.COOLDOWN:
        return ready.at - now <= ask.max_wait_s
    return False
