"""The fallback loop shared by plain and streaming chat: next key, then next provider (Path A).

Moving to another key is immediate. Only when no key of any eligible provider is free does a
request wait, and only for a turn the pool can promise: a pacing slot within the short queue
bound, or the first turn after a cooldown (one waiter per key) within the request's deadline.
Anything else is answered at once (429 with Retry-After when only rate limits stand in the way).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.chat.clients import ClientCache
from app.chat.failures import Attempt, exhausted_error, final_error
from app.chat.fair_gate import FairGate
from app.chat.pools import BYOK, KeyPoolView, PoolResolver
from app.chat.routing import Route
from app.chat.settlement import Lease, Settlement
from app.chat.usage import prompt_text
from app.config import ProviderConfig
from app.errors import KeypoolError
from app.keys.backoff import WaitPolicy
from app.keys.codel import StandingQueue
from app.keys.fairness import FairQueue, Refusal
from app.keys.model import Ask, Grant, KeyState, Outcome
from app.keys.pacing import Pace, estimate_tokens
from app.keys.turns import turn_rate as learned_turn_rate
from app.providers.client import ProviderClient
from app.providers.errors import UpstreamError
from app.state.base import KeyStateStore

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
# How often the waiter holding a provider's turn asks the store again when it cannot tell when
# a key frees up (a held first turn after a cooldown): at least, and at most.
MIN_POLL_S = 0.005
MAX_POLL_S = 0.25
# How far ahead the waiter holding the turn books a paced key's slot: turns are booked in fair
# order only if they are booked late, just before they start.
LINE_HORIZON_S = 0.05


@dataclass(slots=True)
class Success(Generic[T]):
    value: T
    lease: Lease
    attempts: list[Attempt] = field(default_factory=list)


class KeySpread:
    """The keys taken by the requests of one batch, so that siblings land on different keys."""

    def __init__(self) -> None:
        self.taken: dict[str, Counter[int]] = {}
        # Held across one acquire, so siblings never choose from the same picture of the pool.
        self.lock = asyncio.Lock()

    def avoid(self, provider: str) -> Mapping[int, int]:
        return dict(self.taken.get(provider, {}))

    def add(self, provider: str, index: int) -> None:
        self.taken.setdefault(provider, Counter())[index] += 1


@dataclass(slots=True)
class _Job(Generic[T]):
    """One request's walk over the pool."""

    route: Route
    attempt: Callable[[ProviderClient], Awaitable[T]]
    fallback: bool
    group: int | None
    tokens: int
    spread: KeySpread | None
    deadline: float
    user_id: str | None = None
    weight: float = 1.0  # the user's tier weight in fair waiting
    attempts: list[Attempt] = field(default_factory=list)
    tried: dict[str, set[int]] = field(default_factory=dict)
    entered: set[str] = field(default_factory=set)  # providers that granted this request a key
    closed: set[str] = field(default_factory=set)  # providers this request is done with
    skipped: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, Grant] = field(default_factory=dict)  # the last "no key" per provider
    views: dict[str, KeyPoolView] = field(default_factory=dict)  # the keys last asked, per provider
    cooldown_waits: int = 0

    @property
    def spent(self) -> bool:
        """`fallback: false` allows one attempt."""
        return not self.fallback and bool(self.attempts)


class FallbackRunner:
    """Runs one attempt function over keys in selection order until one answers.

    Every key it is granted becomes a `Lease` of `settlement`, which settles it once.
    """

    def __init__(
        self,
        store: KeyStateStore,
        clients: ClientCache,
        settlement: Settlement,
        clock: Callable[[], float],
        *,
        rotate_providers: bool = True,
        groups: int = 1,
        policy: WaitPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        fair_queueing: bool = True,
        pools: PoolResolver | None = None,
        on_exhausted: Callable[[str], None] | None = None,
    ) -> None:
        self.pools = pools  # None: every request is served by `store` and `clients`
        self.store = store
        self.clients = clients
        self.settlement = settlement
        self.clock = clock
        self.rotate_providers = rotate_providers
        self.groups = groups
        self.policy = policy or WaitPolicy()
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.fair_queueing = fair_queueing  # FAIR_QUEUEING: false waits first come, first served
        self.gates: dict[str, FairGate] = {}  # per provider, made at its first waiter
        self.on_exhausted = on_exhausted  # a provider had no usable key (provider_exhausted)

    async def run(
        self,
        route: Route,
        attempt: Callable[[ProviderClient], Awaitable[T]],
        *,
        fallback: bool = True,
        group: int | None = None,
        tokens: int | None = None,
        spread: KeySpread | None = None,
        user_id: str | None = None,
        weight: float = 1.0,
    ) -> Success[T]:
        """`tokens` is the request's estimated cost for token pacing (see `request_tokens`);
        `weight` the user's tier weight when it has to wait in line (fair waiting)."""
        cost = tokens if tokens is not None else estimate_tokens(0, None)
        deadline = self.clock() + self.policy.deadline_s
        job = _Job(route, attempt, fallback, group, cost, spread, deadline, user_id, weight)
        providers = await self._provider_order(route)
        # With one provider the first ask may already reserve; with several, every provider
        # is asked for a free key before any request waits for one.
        single = len(providers) == 1
        while True:
            for provider in providers:
                # While others wait in line, a newcomer takes only a key free now: reserving
                # would book a turn ahead of them. (A length check, no lock: the fast path.)
                reserve = single and not self._waiters(provider.name)
                success = await self._drain(job, provider, reserve=reserve)
                if success is not None:
                    return success
                if job.spent:
                    raise await self._exhausted(job)
            line = self._line_for(job, providers, single)
            if line is not None:
                success, turned = await self._through_line(job, line)
                if success is not None:
                    return success
                if job.spent or (single and not turned):
                    raise await self._exhausted(job)
                if turned:
                    continue
            # No line (BYOK), or its line refused: reserving there would jump it, so skip it.
            skip = line.name if line is not None else None
            success, attempted = await self._wait_for_turn(job, providers, skip)
            if success is not None:
                return success
            if not attempted or job.spent:
                raise await self._exhausted(job)

    async def _drain(
        self, job: _Job[T], provider: ProviderConfig, *, reserve: bool
    ) -> Success[T] | None:
        """Try this provider's keys one after another until one answers or none is left."""
        while provider.name not in job.closed and not job.spent:
            grant, view = await self._acquire(job, provider, reserve=reserve)
            if grant.index is None:
                self._refused(job, provider.name, grant)
                return None
            success = await self._try(job, provider, grant, view)
            if success is not None:
                return success
        return None

    def _line_for(
        self, job: _Job[T], providers: list[ProviderConfig], single: bool
    ) -> ProviderConfig | None:
        """Whose fair line a refused request waits in: its one provider's (unless BYOK) or,
        with several, that of the provider that frees up first (None: reserve a turn)."""
        if single:
            return None if self._own_keys(job, providers[0]) else providers[0]
        return self._earliest_line(job, providers)

    async def _through_line(
        self, job: _Job[T], line: ProviderConfig
    ) -> tuple[Success[T] | None, bool]:
        """Wait in `line` and try the turn it gives; (success, whether a turn was given)."""
        turn = await self._wait_in_line(job, line)
        if turn is None:
            return None, False
        return await self._try(job, line, *turn), True

    def _earliest_line(
        self, job: _Job[T], providers: list[ProviderConfig]
    ) -> ProviderConfig | None:
        """The shared (not BYOK) provider whose rate-limit refusal offered the earliest turn."""
        offers = sorted(
            (grant.reservable_s if grant.reservable_s is not None else grant.wait_s, position)
            for position, provider in enumerate(providers)
            if provider.name not in job.closed
            and (grant := job.refusals.get(provider.name)) is not None
            and grant.refused == "rate_limited"
            and grant.wait_s is not None
            and not self._own_keys(job, provider)
        )
        return providers[offers[0][1]] if offers else None

    async def _wait_for_turn(
        self, job: _Job[T], providers: list[ProviderConfig], skip: str | None = None
    ) -> tuple[Success[T] | None, bool]:
        """Reserve the earliest turn any provider offered; (success, whether an attempt ran)."""
        offers = sorted(
            (grant.reservable_s, position, provider)
            for position, provider in enumerate(providers)
            if provider.name not in job.closed
            and provider.name != skip
            and (grant := job.refusals.get(provider.name)) is not None
            and grant.reservable_s is not None
        )
        for _, _, provider in offers:
            grant, view = await self._acquire(job, provider, reserve=True)
            if grant.index is None:
                self._refused(job, provider.name, grant)
                continue
            return await self._try(job, provider, grant, view), True
        return None, False

    @staticmethod
    def _own_keys(job: _Job[T], provider: ProviderConfig) -> bool:
        """Whether the user's own keys (BYOK) serve this provider: their private pool waits
        outside the shared fair line, for its earliest turn as with several providers."""
        view = job.views.get(provider.name)
        return view is not None and view.byok

    def _waiters(self, name: str) -> int:
        gate = self.gates.get(name)
        return len(gate) + gate.driving if gate is not None else 0

    def _gate(self, name: str) -> FairGate:
        gate = self.gates.get(name)
        if gate is None:
            queue = FairQueue(fair=self.fair_queueing)
            gate = self.gates[name] = FairGate(queue, self.clock, StandingQueue())
        return gate

    async def _wait_in_line(
        self, job: _Job[T], provider: ProviderConfig
    ) -> tuple[Grant, KeyPoolView] | None:
        """Wait for a key turn in weighted fair order across users (fair_gate.py), or None.

        Only a request the pool refused for rate limits, whose wait fits its deadline, and with
        an untried key left, joins the line; the line itself refuses at once what it cannot
        serve in time (or sheds while a queue stands). The waiter holding the turn books the
        next key turn just before it starts (LINE_HORIZON_S), then hands the turn on.
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
        gate = self._gate(name)
        view = job.views.get(name)
        config = view.config if view is not None else provider
        rate = turn_rate(config)
        if rate is None:
            rate = await self._learned_turn_rate(job, config)
        entry = gate.enter(job.user_id, job.weight, job.deadline, rate)
        if isinstance(entry, Refusal):
            wait = max(refusal.wait_s, entry.retry_after_s)
            job.refusals[name] = Grant(None, wait_s=wait, refused="rate_limited")
            return None
        gate.start()
        if not await gate.wait(entry):
            return None
        try:
            while True:
                grant, view = await self._acquire(
                    job, provider, reserve=True, horizon=LINE_HORIZON_S
                )
                if grant.index is not None:
                    return grant, view
                self._refused(job, name, grant)
                left = job.deadline - self.clock()
                if grant.refused != "rate_limited" or grant.wait_s is None or grant.wait_s >= left:
                    return None
                nap = min(max(grant.wait_s - LINE_HORIZON_S, MIN_POLL_S), MAX_POLL_S, left)
                await self.sleep(nap)
        finally:
            gate.done()

    async def _learned_turn_rate(self, job: _Job[T], config: ProviderConfig) -> float | None:
        """With nothing configured, the turn rate the keys' learned limits allow (turns.py);
        read only by a request about to wait, never on the fast path."""
        view = job.views.get(config.name)
        store = view.store if view is not None else self.store
        snap = await store.snapshot(config.name, self.clock())
        split = len(snap.keys) if config.shared_limit == "true" else 1
        pace = Pace(config.rpm_per_key, config.tpm_per_key, burst=config.burst_per_key)
        return learned_turn_rate(pace, snap.keys, split)

    async def _untried_key_left(self, job: _Job[T], name: str, left: float) -> bool:
        """Whether a key this request has not tried may serve it before its deadline (read only
        when it tried some: a refusal's wait counts tried keys too)."""
        tried = job.tried.get(name)
        if not tried:
            return True
        view = job.views.get(name)
        store = view.store if view is not None else self.store
        now = self.clock()
        snap = await store.snapshot(name, now)
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

    def _view(self, job: _Job[T], provider: ProviderConfig) -> KeyPoolView:
        """The keys that serve this provider for this request's user (read just before the
        acquire, so the grant's index is in this view's layout)."""
        if self.pools is None:
            clients = functools.partial(self.clients.get, provider.name)
            view = KeyPoolView(provider, self.store, clients)
        else:
            view = self.pools.resolve(provider.name, job.user_id)
        job.views[provider.name] = view
        return view

    async def _acquire(
        self,
        job: _Job[T],
        provider: ProviderConfig,
        *,
        reserve: bool,
        horizon: float | None = None,
    ) -> tuple[Grant, KeyPoolView]:
        """`horizon` caps how far ahead a pacing slot may be reserved (the fair line's)."""
        name = provider.name
        if job.spread is None:
            view = self._view(job, provider)
            ask = self._ask(job, view, reserve, horizon=horizon)
            return await view.store.acquire(name, self.clock(), ask), view
        async with job.spread.lock:
            view = self._view(job, provider)
            avoid = {} if view.byok else job.spread.avoid(name)
            grant = await view.store.acquire(
                name, self.clock(), self._ask(job, view, reserve, avoid, horizon)
            )
            if grant.index is not None and not view.byok:
                job.spread.add(name, grant.index)
            return grant, view

    def _ask(
        self,
        job: _Job[T],
        view: KeyPoolView,
        reserve: bool,
        avoid: Mapping[int, int] | None = None,
        horizon: float | None = None,
    ) -> Ask:
        max_wait, max_queue = self.policy.bounds(job.deadline - self.clock())
        if horizon is not None:
            max_queue = min(max_queue, horizon)
        keys = 0 if view.byok else len(view.config.keys)
        return Ask(
            exclude=frozenset(job.tried.get(view.config.name, ())),
            preferred=preferred_key(job.group, keys, self.groups),
            avoid=avoid or {},
            tokens=job.tokens,
            reserve=reserve,
            max_wait_s=max_wait,
            max_queue_s=max_queue,
            admit=view.config.name not in job.entered,
        )

    def _refused(self, job: _Job[T], name: str, grant: Grant) -> None:
        if grant.refused == "circuit_open":
            job.closed.add(name)
            job.skipped[name] = "circuit_open"
            job.refusals.pop(name, None)
        else:
            job.refusals[name] = grant
            if grant.refused == "no_usable_key" and self.on_exhausted is not None:
                self.on_exhausted(name)

    async def _try(
        self, job: _Job[T], provider: ProviderConfig, grant: Grant, view: KeyPoolView
    ) -> Success[T] | None:
        name, index = provider.name, grant.index
        assert index is not None
        job.entered.add(name)
        job.tried.setdefault(name, set()).add(index)
        model = job.route.model_for(provider)
        lease = Lease(view.config, index, model, job.group, self.settlement, job.user_id)
        lease.view = view
        try:
            late = await self._sleep_until_turn(job, grant, lease)
            if late is not None:
                # The key announced a reset past this request's deadline: going would be a
                # certain upstream 429, so the turn is given back and the request answered 429.
                await lease.finish(Outcome.CANCELLED)
                job.refusals[name] = Grant(None, wait_s=late, refused="rate_limited")
                return None
            if not self.settlement.follow(lease):
                # The key was deleted while this attempt waited for its turn: try another.
                await lease.finish(Outcome.CANCELLED)
                return None
            lease.started_at = self.clock()
            assert lease.view is not None
            value = await job.attempt(lease.view.client(lease.key_index, lease.model))
        except UpstreamError as exc:
            await lease.finish(exc.outcome, exc.signal)
            job.attempts.append(Attempt(name, lease.label, exc.outcome.value, exc.status))
            final = final_error(exc, job.route, name)
            if final is not None:
                raise final from None
            if exc.outcome is Outcome.NOT_FOUND:
                job.closed.add(name)  # Path A: this provider's default model is gone
            return None
        except BaseException:
            await asyncio.shield(lease.finish(Outcome.CANCELLED))
            raise
        return Success(value, lease, job.attempts)

    async def _sleep_until_turn(self, job: _Job[T], grant: Grant, lease: Lease) -> float | None:
        """Sleep until a reserved turn (after a cooldown, plus growing full jitter), then make
        sure the key did not announce a reset meanwhile; returns that reset's wait when it is
        past the deadline (None: go)."""
        if grant.delay_s <= 0 or grant.index is None:
            return None
        delay = grant.delay_s
        if grant.after_cooldown:
            jitter = self.policy.jitter(job.cooldown_waits, self.rng)
            job.cooldown_waits += 1
            delay = max(delay, min(delay + jitter, job.deadline - self.clock()))
        await self.sleep(delay)
        if not self.settlement.follow(lease) or lease.view is None:
            return None
        store, provider = lease.view.store, lease.provider.name
        extra = await store.recheck(provider, lease.key_index, self.clock(), job.tokens)
        if extra > job.deadline - self.clock():
            return extra
        if extra > 0:
            await self.sleep(extra)
        return None

    async def _exhausted(self, job: _Job[T]) -> KeypoolError:
        attempted = {a.provider for a in job.attempts}
        skipped = dict(job.skipped)
        for name, grant in job.refusals.items():
            if name not in attempted and name not in skipped:
                skipped[name] = grant.refused or "no_usable_key"
        waits = [g.wait_s for g in job.refusals.values() if g.wait_s is not None]
        # Model groups (several providers) report per provider, as Path A does.
        untried = await self._untried_keys(job) if not job.route.spans_providers else {}
        return exhausted_error(
            job.route, job.attempts, skipped, min(waits) if waits else None, untried
        )

    async def _untried_keys(self, job: _Job[T]) -> dict[int, str] | dict[str, str]:
        """Path B's errors also name the unusable keys no attempt reached, by state (read only on
        this error path). Usable keys left untried (`fallback: false`, budgets) are not listed."""
        provider = job.route.providers[0]
        name = provider.name
        view = job.views.get(name) or self._view(job, provider)
        now = self.clock()
        snap = await view.store.snapshot(name, now)
        tried = job.tried.get(name, set())
        circuit = job.skipped.get(name)
        states = {i: status.effective_state(now) for i, status in enumerate(snap.keys)}
        found = {
            i: circuit or state.value
            for i, state in states.items()
            if i not in tried and (circuit or state is not KeyState.ACTIVE)
        }
        if view.byok:  # the user's own keys are named as such, never by a shared index
            return {BYOK: next(iter(found.values()))} if found else {}
        return found

    async def _provider_order(self, route: Route) -> list[ProviderConfig]:
        providers = list(route.providers)
        # Model groups rotate their members as Path A rotates providers.
        if not route.spans_providers or len(providers) < 2 or not self.rotate_providers:
            return providers
        offset = await self.store.next_provider_offset(len(providers))
        return providers[offset:] + providers[:offset]


def request_tokens(params: dict[str, Any]) -> int:
    """A request's estimated token cost for pacing: prompt characters / 4 + its completion cap."""
    chars = sum(len(text) for text in prompt_text(params))
    cap = params.get("max_tokens") or params.get("max_completion_tokens")
    return estimate_tokens(chars, cap if isinstance(cap, int) else None)


def turn_rate(provider: ProviderConfig) -> float | None:
    """Key turns per second a paced provider hands out (None: not configured, unknown); a burst
    widens the spacing of the turns after it (pacing.Pace.burst)."""
    if not provider.rpm_per_key:
        return None
    pace = Pace(provider.rpm_per_key, burst=provider.burst_per_key)
    return len(provider.keys) / pace.request_interval


def preferred_key(group: int | None, key_count: int, groups: int) -> int | None:
    """Key group g (1-based) tries key (g-1) mod n first; no group, or a group above G, none."""
    if group is None or not 1 <= group <= groups or key_count == 0:
        return None
    return (group - 1) % key_count
