"""The fallback loop shared by plain and streaming chat: next key, then next provider (Path A).

Moving to another key is immediate. Only when no key of any eligible provider is free does a
request wait: in the provider's fair line (`waiting.py`), or, for a user's own keys, for a turn
the pool can promise within the request's deadline. Anything else is answered at once (429 with
Retry-After when only rate limits stand in the way).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from app.chat.clients import ClientCache
from app.chat.failures import Attempt, exhausted_error, final_error
from app.chat.fair_gate import FairGate
from app.chat.job import Job, KeySpread
from app.chat.pools import BYOK, KeyPoolView, PoolResolver
from app.chat.routing import Route
from app.chat.settlement import Lease, Settlement
from app.chat.usage import prompt_text
from app.chat.waiting import LINE_HORIZON_S, FairLines, turn_rate
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
__all__ = ["FallbackRunner", "KeySpread", "Success", "preferred_key", "request_tokens", "turn_rate"]


@dataclass(slots=True)
class Success(Generic[T]):
    value: T
    lease: Lease
    attempts: list[Attempt] = field(default_factory=list)


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
        # The fair lines of the shared pools (FAIR_QUEUEING: false waits first come, first served).
        self.lines = FairLines(store, clock, sleep, fair=fair_queueing)
        self.on_exhausted = on_exhausted  # a provider had no usable key (provider_exhausted)

    @property
    def gates(self) -> dict[str, FairGate]:
        """The fair line of each provider that had a waiter (waiting.py)."""
        return self.lines.gates

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
        job = Job(route, attempt, fallback, group, cost, spread, deadline, user_id, weight)
        providers = await self._provider_order(route)
        # With one provider the first ask may already reserve; with several, every provider
        # is asked for a free key before any request waits for one.
        single = len(providers) == 1
        while True:
            for provider in providers:
                # While others wait in line, a newcomer takes only a key free now: reserving
                # would book a turn ahead of them. (A length check, no lock: the fast path.)
                reserve = single and not self.lines.waiters(provider.name)
                success = await self._drain(job, provider, reserve=reserve)
                if success is not None:
                    return success
                if job.spent:
                    raise await self._exhausted(job)
            line = self.lines.line_for(job, providers, single)
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
        self, job: Job[T], provider: ProviderConfig, *, reserve: bool
    ) -> Success[T] | None:
        """Try this provider's keys one after another until one answers or none is left."""
        while provider.name not in job.closed and not job.spent:
            grant, view = await self._acquire(job, provider, reserve=reserve)
            if grant.index is None:
                self._refused(job, provider.name, grant)
                return None
            if not view.byok:
                self.lines.observe(provider.name, grant.delay_s)
            success = await self._try(job, provider, grant, view)
            if success is not None:
                return success
        return None

    async def _through_line(
        self, job: Job[T], line: ProviderConfig
    ) -> tuple[Success[T] | None, bool]:
        """Wait in `line` and try the turn it gives; (success, whether a turn was given)."""
        turn = await self.lines.wait(
            job,
            line,
            functools.partial(self._acquire, job, line, reserve=True, horizon=LINE_HORIZON_S),
            functools.partial(self._refused, job, line.name),
        )
        if turn is None:
            return None, False
        return await self._try(job, line, *turn), True

    async def _wait_for_turn(
        self, job: Job[T], providers: list[ProviderConfig], skip: str | None = None
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

    def _view(self, job: Job[T], provider: ProviderConfig) -> KeyPoolView:
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
        job: Job[T],
        provider: ProviderConfig,
        *,
        reserve: bool,
        horizon: float | None = None,
    ) -> tuple[Grant, KeyPoolView]:
        """`horizon` caps how far ahead a pacing slot may be booked (the fair line's)."""
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
        job: Job[T],
        view: KeyPoolView,
        reserve: bool,
        avoid: Mapping[int, int] | None = None,
        horizon: float | None = None,
    ) -> Ask:
        max_wait, max_queue = self.policy.bounds(job.deadline - self.clock())
        if horizon is None and not view.byok and self.lines.standing(view.config.name):
            # While a queue stands nobody books far ahead first come, first served: the wait
            # goes through the fair line, which sheds the excess (waiting.py).
            horizon = LINE_HORIZON_S
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

    def _refused(self, job: Job[T], name: str, grant: Grant) -> None:
        if grant.refused == "circuit_open":
            job.closed.add(name)
            job.skipped[name] = "circuit_open"
            job.refusals.pop(name, None)
        else:
            job.refusals[name] = grant
            if grant.refused == "no_usable_key" and self.on_exhausted is not None:
                self.on_exhausted(name)

    async def _try(
        self, job: Job[T], provider: ProviderConfig, grant: Grant, view: KeyPoolView
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

    async def _sleep_until_turn(self, job: Job[T], grant: Grant, lease: Lease) -> float | None:
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

    async def _exhausted(self, job: Job[T]) -> KeypoolError:
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

    async def _untried_keys(self, job: Job[T]) -> dict[int, str] | dict[str, str]:
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


def preferred_key(group: int | None, key_count: int, groups: int) -> int | None:
    """Key group g (1-based) tries key (g-1) mod n first; no group, or a group above G, none."""
    if group is None or not 1 <= group <= groups or key_count == 0:
        return None
    return (group - 1) % key_count
