"""The fallback loop shared by plain and streaming chat: next key, then next provider (Path A).

Moving to another key is immediate. Only when no key of any eligible provider is free does a
request wait, and only for a turn the pool can promise: a pacing slot within the short queue
bound, or the first turn after a cooldown (one waiter per key) within the request's deadline.
Anything else is answered at once (429 with Retry-After when only rate limits stand in the way).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.chat.clients import ClientCache
from app.chat.failures import Attempt, exhausted_error, final_error
from app.chat.routing import Route
from app.chat.settlement import Lease, Settlement
from app.chat.usage import prompt_text
from app.config import ProviderConfig
from app.errors import KeypoolError
from app.keys.backoff import WaitPolicy
from app.keys.model import Ask, Grant, KeyState, Outcome
from app.keys.pacing import estimate_tokens
from app.providers.client import ProviderClient
from app.providers.errors import UpstreamError
from app.state.base import KeyStateStore

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


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
    attempts: list[Attempt] = field(default_factory=list)
    tried: dict[str, set[int]] = field(default_factory=dict)
    entered: set[str] = field(default_factory=set)  # providers that granted this request a key
    closed: set[str] = field(default_factory=set)  # providers this request is done with
    skipped: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, Grant] = field(default_factory=dict)  # the last "no key" per provider
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
        on_exhausted: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.clients = clients
        self.settlement = settlement
        self.clock = clock
        self.rotate_providers = rotate_providers
        self.groups = groups
        self.policy = policy or WaitPolicy()
        self.sleep = sleep
        self.rng = rng or random.Random()
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
    ) -> Success[T]:
        """`tokens` is the request's estimated cost for token pacing (see `request_tokens`)."""
        cost = tokens if tokens is not None else estimate_tokens(0, None)
        deadline = self.clock() + self.policy.deadline_s
        job = _Job(route, attempt, fallback, group, cost, spread, deadline, user_id)
        providers = await self._provider_order(route)
        # With one provider the first ask may already reserve; with several, every provider
        # is asked for a free key before any request waits for one.
        single = len(providers) == 1
        while True:
            for provider in providers:
                success = await self._drain(job, provider, reserve=single)
                if success is not None:
                    return success
                if job.spent:
                    raise await self._exhausted(job)
            if single:
                raise await self._exhausted(job)
            success, attempted = await self._wait_for_turn(job, providers)
            if success is not None:
                return success
            if not attempted or job.spent:
                raise await self._exhausted(job)

    async def _drain(
        self, job: _Job[T], provider: ProviderConfig, *, reserve: bool
    ) -> Success[T] | None:
        """Try this provider's keys one after another until one answers or none is left."""
        while provider.name not in job.closed and not job.spent:
            grant = await self._acquire(job, provider, reserve=reserve)
            if grant.index is None:
                self._refused(job, provider.name, grant)
                return None
            success = await self._try(job, provider, grant)
            if success is not None:
                return success
        return None

    async def _wait_for_turn(
        self, job: _Job[T], providers: list[ProviderConfig]
    ) -> tuple[Success[T] | None, bool]:
        """Reserve the earliest turn any provider offered; (success, whether an attempt ran)."""
        offers = sorted(
            (grant.reservable_s, position, provider)
            for position, provider in enumerate(providers)
            if provider.name not in job.closed
            and (grant := job.refusals.get(provider.name)) is not None
            and grant.reservable_s is not None
        )
        for _, _, provider in offers:
            grant = await self._acquire(job, provider, reserve=True)
            if grant.index is None:
                self._refused(job, provider.name, grant)
                continue
            return await self._try(job, provider, grant), True
        return None, False

    async def _acquire(self, job: _Job[T], provider: ProviderConfig, *, reserve: bool) -> Grant:
        name = provider.name
        if job.spread is None:
            return await self.store.acquire(name, self.clock(), self._ask(job, provider, reserve))
        async with job.spread.lock:
            ask = self._ask(job, provider, reserve, job.spread.avoid(name))
            grant = await self.store.acquire(name, self.clock(), ask)
            if grant.index is not None:
                job.spread.add(name, grant.index)
            return grant

    def _ask(
        self,
        job: _Job[T],
        provider: ProviderConfig,
        reserve: bool,
        avoid: Mapping[int, int] | None = None,
    ) -> Ask:
        max_wait, max_queue = self.policy.bounds(job.deadline - self.clock())
        return Ask(
            exclude=frozenset(job.tried.get(provider.name, ())),
            preferred=preferred_key(job.group, len(provider.keys), self.groups),
            avoid=avoid or {},
            tokens=job.tokens,
            reserve=reserve,
            max_wait_s=max_wait,
            max_queue_s=max_queue,
            admit=provider.name not in job.entered,
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

    async def _try(self, job: _Job[T], provider: ProviderConfig, grant: Grant) -> Success[T] | None:
        name, index = provider.name, grant.index
        assert index is not None
        job.entered.add(name)
        job.tried.setdefault(name, set()).add(index)
        model = job.route.model_for(provider)
        lease = Lease(provider, index, model, job.group, self.settlement, job.user_id)
        try:
            await self._sleep_until_turn(job, grant, name)
            lease.started_at = self.clock()
            value = await job.attempt(self.clients.get(name, index, lease.model))
        except UpstreamError as exc:
            await lease.finish(exc.outcome, exc.signal)
            job.attempts.append(Attempt(name, index, exc.outcome.value, exc.status))
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

    async def _sleep_until_turn(self, job: _Job[T], grant: Grant, provider: str) -> None:
        """Sleep until a reserved turn (after a cooldown, plus growing full jitter), then make
        sure the key did not announce a reset meanwhile."""
        if grant.delay_s <= 0 or grant.index is None:
            return
        delay = grant.delay_s
        if grant.after_cooldown:
            jitter = self.policy.jitter(job.cooldown_waits, self.rng)
            job.cooldown_waits += 1
            delay = max(delay, min(delay + jitter, job.deadline - self.clock()))
        await self.sleep(delay)
        extra = await self.store.recheck(provider, grant.index, self.clock(), job.tokens)
        if 0 < extra <= job.deadline - self.clock():
            await self.sleep(extra)

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

    async def _untried_keys(self, job: _Job[T]) -> dict[int, str]:
        """Path B's errors also name the unusable keys no attempt reached, by state (read only on
        this error path). Usable keys left untried (`fallback: false`, budgets) are not listed."""
        name = job.route.providers[0].name
        now = self.clock()
        snap = await self.store.snapshot(name, now)
        tried = job.tried.get(name, set())
        circuit = job.skipped.get(name)
        states = {i: status.effective_state(now) for i, status in enumerate(snap.keys)}
        return {
            i: circuit or state.value
            for i, state in states.items()
            if i not in tried and (circuit or state is not KeyState.ACTIVE)
        }

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


def preferred_key(group: int | None, key_count: int, groups: int) -> int | None:
    """Key group g (1-based) tries key (g-1) mod n first; no group, or a group above G, none."""
    if group is None or not 1 <= group <= groups or key_count == 0:
        return None
    return (group - 1) % key_count
