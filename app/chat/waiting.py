"""Fair waiting: the per-provider lines a request the pool refused for rate limits waits in.

Moving to another key is immediate; only a request no key can take now comes here. Each provider
has one `FairGate` (weighted fair across users, `app/keys/fairness.py`) that admits or refuses
at once, then hands out key turns in fair order. One waiter at a time holds the provider's turn:
it books the next key turn just before it starts (`LINE_HORIZON_S`) and hands the turn on, so
the store is not polled by every waiter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from app.chat.fair_gate import FairGate
from app.chat.job import Job
from app.chat.pools import KeyPoolView
from app.config import ProviderConfig
from app.keys.codel import StandingQueue
from app.keys.fairness import FairQueue, Refusal
from app.keys.model import Grant, KeyState
from app.keys.pacing import Pace
from app.keys.turns import turn_rate as learned_turn_rate
from app.state.base import KeyStateStore

Sleep = Callable[[float], Awaitable[None]]
Turn = tuple[Grant, KeyPoolView]
# How often the waiter holding a provider's turn asks the store again when it cannot tell when
# a key frees up (a held first turn after a cooldown): at least, and at most.
MIN_POLL_S = 0.005
MAX_POLL_S = 0.25
# How far ahead a paced key's turn is booked by the waiter holding the line's turn (turns are
# booked in fair order only if they are booked late, just before they start), and by anyone else
# while a queue stands: no queue of bookings first come, first served then builds in the pool,
# where the line could not shed it.
LINE_HORIZON_S = 0.01


class FairLines:
    """The fair lines of the shared pools, one per provider, made at its first waiter."""

    def __init__(
        self,
        store: KeyStateStore,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
        *,
        fair: bool = True,
    ) -> None:
        self.store = store  # the shared pools (a request's own keys never wait here)
        self.clock = clock
        self.sleep = sleep
        self.fair = fair  # FAIR_QUEUEING: false waits first come, first served
        self.gates: dict[str, FairGate] = {}  # made at a provider's first waiter
        # Per provider, made at its first turn: every booked wait feeds it (codel.py).
        self.detectors: dict[str, StandingQueue] = {}

    def waiters(self, name: str) -> int:
        """How many wait in this provider's line, the holder of its turn included."""
        gate = self.gates.get(name)
        return len(gate) + gate.driving if gate is not None else 0

    def standing(self, name: str) -> bool:
        """Whether a queue stands for this provider: turns are then booked only within
        LINE_HORIZON_S outside its line, and its excess is shed (codel.py)."""
        detector = self.detectors.get(name)
        return detector is not None and detector.shedding(self.clock())

    def observe(self, name: str, wait_s: float) -> None:
        """A request booked a turn `wait_s` ahead outside the line (0: a key free now): the
        standing-queue detector sees every wait, not only the line's."""
        self._detector(name).booked(wait_s, self.clock())

    def gate(self, name: str) -> FairGate:
        gate = self.gates.get(name)
        if gate is None:
            queue = FairQueue(fair=self.fair)
            gate = self.gates[name] = FairGate(queue, self.clock, self._detector(name))
        return gate

    def _detector(self, name: str) -> StandingQueue:
        detector = self.detectors.get(name)
        if detector is None:
            detector = self.detectors[name] = StandingQueue()
        return detector

    def line_for(
        self, job: Job[Any], providers: list[ProviderConfig], single: bool
    ) -> ProviderConfig | None:
        """Whose fair line a refused request waits in: its one provider's (unless BYOK) or,
        with several, that of the provider that frees up first (None: reserve a turn)."""
        if single:
            return None if job.own_keys(providers[0].name) else providers[0]
        return self._earliest_line(job, providers)

    def _earliest_line(
        self, job: Job[Any], providers: list[ProviderConfig]
    ) -> ProviderConfig | None:
        """The shared (not BYOK) provider whose rate-limit refusal offered the earliest turn."""
        offers = sorted(
            (grant.reservable_s if grant.reservable_s is not None else grant.wait_s, position)
            for position, provider in enumerate(providers)
            if provider.name not in job.closed
            and (grant := job.refusals.get(provider.name)) is not None
            and grant.refused == "rate_limited"
            and grant.wait_s is not None
            and not job.own_keys(provider.name)
        )
        return providers[offers[0][1]] if offers else None

    async def wait(
        self,
        job: Job[Any],
        provider: ProviderConfig,
        acquire: Callable[[], Awaitable[Turn]],
        refused: Callable[[Grant], None],
    ) -> Turn | None:
        """Wait for a key turn in weighted fair order across users (fair_gate.py), or None.

        Only a request the pool refused for rate limits, whose wait fits its deadline, and with
        an untried key left, joins the line; the line itself refuses at once what it cannot
        serve in time (or sheds while a queue stands). The waiter holding the turn books the
        next key turn just before it starts (`acquire` reserves within LINE_HORIZON_S), then
        hands the turn on. `refused` records each refusal on the way (the job's Retry-After).
        """
        name = provider.name
        refusal = job.refusals.get(name)
        left = job.deadline - self.clock()
        if (
            refusal is None
            or refusal.refused != "rate_limited"
            or refusal.wait_s is None
            or refusal.wait_s >= left
            or not await self._untried_key_left(job, name, left)
        ):
            return None
        gate = self.gate(name)
        view = job.views.get(name)
        config = view.config if view is not None else provider
        rate = turn_rate(config)
        if rate is None:
            rate = await self._learned_turn_rate(job, config)
        ahead = refusal.reservable_s if refusal.reservable_s is not None else refusal.wait_s
        entry = gate.enter(job.user_id, job.weight, job.deadline, rate, ahead)
        if isinstance(entry, Refusal):
            wait = max(refusal.wait_s, entry.retry_after_s)
            job.refusals[name] = Grant(None, wait_s=wait, refused="rate_limited")
            return None
        gate.start()
        if not await gate.wait(entry):
            return None
        try:
            while True:
                grant, view = await acquire()
                if grant.index is not None:
                    return grant, view
                refused(grant)
                left = job.deadline - self.clock()
                if grant.refused != "rate_limited" or grant.wait_s is None or grant.wait_s >= left:
                    return None
                nap = min(max(grant.wait_s - LINE_HORIZON_S, MIN_POLL_S), MAX_POLL_S, left)
                await self.sleep(nap)
        finally:
            gate.done()

    def _store(self, job: Job[Any], name: str) -> KeyStateStore:
        view = job.views.get(name)
        return view.store if view is not None else self.store

    async def _learned_turn_rate(self, job: Job[Any], config: ProviderConfig) -> float | None:
        """With nothing configured, the turn rate the keys' learned limits allow (turns.py);
        read only by a request about to wait, never on the fast path."""
        snap = await self._store(job, config.name).snapshot(config.name, self.clock())
        split = len(snap.keys) if config.shared_limit == "true" else 1
        pace = Pace(config.rpm_per_key, config.tpm_per_key, burst=config.burst_per_key)
        return learned_turn_rate(pace, snap.keys, split)

    async def _untried_key_left(self, job: Job[Any], name: str, left: float) -> bool:
        """Whether a key this request has not tried may serve it before its deadline (read only
        when it tried some: a refusal's wait counts tried keys too)."""
        tried = job.tried.get(name)
        if not tried:
            return True
        now = self.clock()
        snap = await self._store(job, name).snapshot(name, now)
        for index, status in enumerate(snap.keys):
            if index in tried:
                continue
            state = status.effective_state(now)
            if state is KeyState.ACTIVE:
                return True
            until = status.cooldown_until
            if state is KeyState.RATE_LIMITED and until is not None and until - now < left:
                return True
        return False


def turn_rate(provider: ProviderConfig) -> float | None:
    """Key turns per second a paced provider hands out (None: not configured, unknown); a burst
    widens the spacing of the turns after it (pacing.Pace.burst)."""
    if not provider.rpm_per_key:
        return None
    pace = Pace(provider.rpm_per_key, burst=provider.burst_per_key)
    return len(provider.keys) / pace.request_interval
