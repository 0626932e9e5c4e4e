"""The fallback loop shared by plain and streaming chat: next key, then next provider (Path A)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from app.chat.clients import ClientCache
from app.chat.failures import Attempt, exhausted_error, final_error
from app.chat.routing import Route
from app.chat.usage import UsageSink
from app.config import ProviderConfig
from app.db.stats_writer import UsageEvent
from app.keys.model import NO_SIGNAL, Outcome, RateLimitSignal
from app.providers.client import ProviderClient, Usage
from app.providers.errors import UpstreamError
from app.state.base import KeyStateStore

T = TypeVar("T")


@dataclass(slots=True)
class Lease:
    """A key that answered; `finish` it exactly once, when the answer (or stream) is over."""

    provider: ProviderConfig
    key_index: int
    model: str
    group: int | None
    _runner: FallbackRunner
    _done: bool = False

    async def finish(
        self,
        outcome: Outcome,
        signal: RateLimitSignal = NO_SIGNAL,
        usage: Usage | None = None,
    ) -> None:
        if self._done:
            return
        self._done = True
        await self._runner.settle(self, outcome, signal, usage)


@dataclass(slots=True)
class Success(Generic[T]):
    value: T
    lease: Lease
    attempts: list[Attempt] = field(default_factory=list)


class FallbackRunner:
    """Runs one attempt function over keys in selection order until one answers."""

    def __init__(
        self,
        store: KeyStateStore,
        clients: ClientCache,
        sink: UsageSink,
        clock: Callable[[], float],
        *,
        rotate_providers: bool = True,
        groups: int = 1,
    ) -> None:
        self.store = store
        self.clients = clients
        self.sink = sink
        self.clock = clock
        self.rotate_providers = rotate_providers
        self.groups = groups
        self.on_key_failure: Callable[[], None] = _nothing

    async def run(
        self,
        route: Route,
        attempt: Callable[[ProviderClient], Awaitable[T]],
        *,
        fallback: bool = True,
        group: int | None = None,
    ) -> Success[T]:
        attempts: list[Attempt] = []
        skipped: dict[str, str] = {}
        for provider in await self._provider_order(route):
            if not await self.store.allow_provider(provider.name, self.clock()):
                skipped[provider.name] = "circuit_open"
                continue
            success = await self._run_provider(route, provider, attempt, attempts, fallback, group)
            if success is not None:
                success.attempts = attempts
                return success
            if not any(a.provider == provider.name for a in attempts):
                skipped[provider.name] = await self._skip_reason(provider.name)
            if attempts and not fallback:
                break
        raise exhausted_error(route, attempts, skipped, await self._retry_after(route))

    async def _run_provider(
        self,
        route: Route,
        provider: ProviderConfig,
        attempt: Callable[[ProviderClient], Awaitable[T]],
        attempts: list[Attempt],
        fallback: bool,
        group: int | None,
    ) -> Success[T] | None:
        tried: set[int] = set()
        preferred = preferred_key(group, len(provider.keys), self.groups)
        model = route.model_for(provider)
        while fallback or not tried:
            index = await self.store.acquire(
                provider.name, self.clock(), exclude=tried, preferred=preferred
            )
            if index is None:
                break
            tried.add(index)
            lease = Lease(provider, index, model, group, self)
            try:
                value = await attempt(self.clients.get(provider.name, index, model))
            except UpstreamError as exc:
                await lease.finish(exc.outcome, exc.signal)
                attempts.append(Attempt(provider.name, index, exc.outcome.value, exc.status))
                final = final_error(exc, route, provider.name)
                if final is not None:
                    raise final from None
                if exc.outcome is Outcome.NOT_FOUND:
                    return None  # Path A: this provider's default model is gone; next provider
                continue
            except BaseException:
                await asyncio.shield(lease.finish(Outcome.CANCELLED))
                raise
            return Success(value, lease)
        if not tried:
            await self.store.release(
                provider.name, None, Outcome.CANCELLED, self.clock(), NO_SIGNAL
            )
        return None

    async def settle(
        self, lease: Lease, outcome: Outcome, signal: RateLimitSignal, usage: Usage | None
    ) -> None:
        now = self.clock()
        await self.store.release(lease.provider.name, lease.key_index, outcome, now, signal)
        if outcome is Outcome.AUTH_FAILED or outcome.is_provider_failure:
            self.on_key_failure()
        if outcome is Outcome.CANCELLED and usage is None:
            return
        self.sink.record(
            UsageEvent(
                provider=lease.provider.name,
                key_index=lease.key_index,
                fingerprint=lease.provider.keys[lease.key_index].fingerprint,
                key_group=lease.group,
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                error=outcome.is_key_failure,
                rate_limited=outcome is Outcome.RATE_LIMITED,
                at=now,
            )
        )

    async def _provider_order(self, route: Route) -> list[ProviderConfig]:
        providers = list(route.providers)
        if route.path == "B" or len(providers) < 2 or not self.rotate_providers:
            return providers
        offset = await self.store.next_provider_offset(len(providers))
        return providers[offset:] + providers[:offset]

    async def _skip_reason(self, provider: str) -> str:
        cooling = await self.store.retry_after(provider, self.clock())
        return Outcome.RATE_LIMITED.value if cooling is not None else "no_usable_key"

    async def _retry_after(self, route: Route) -> float | None:
        now = self.clock()
        waits = [await self.store.retry_after(p.name, now) for p in route.providers]
        known = [w for w in waits if w is not None]
        return min(known) if known else None


def _nothing() -> None:
    return None


def preferred_key(group: int | None, key_count: int, groups: int) -> int | None:
    """Key group g (1-based) tries key (g-1) mod n first; no group, or a group above G, none."""
    if group is None or not 1 <= group <= groups or key_count == 0:
        return None
    return (group - 1) % key_count
