"""The chat layer's observer: what it hears when attempts settle and when a provider runs dry."""

from __future__ import annotations

import random
from typing import Any, cast

import pytest

from app.chat.clients import ClientCache
from app.chat.fallback import FallbackRunner
from app.chat.routing import Route
from app.chat.settlement import Lease, Settlement
from app.config import ApiKey, ProviderConfig, fingerprint
from app.errors import AllKeysFailed
from app.keys.breaker import CircuitBreaker
from app.keys.model import Ask, Outcome, RateLimitSignal
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.providers import errors as upstream
from app.providers.client import ProviderClient, Usage
from app.providers.transport import Transport
from app.state.memory import MemoryStateStore
from app.usage import UsageEvent

T0 = 1_000.0


def provider(name: str = "alpha", keys: int = 2) -> ProviderConfig:
    secrets = [f"{name}-secret-number-{i}" for i in range(keys)]
    return ProviderConfig(
        name=name,
        base_url=f"http://{name}.invalid/v1",
        default_model="m",
        keys=tuple(ApiKey(s, fingerprint(name, i, s)) for i, s in enumerate(secrets)),
    )


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.settled: list[dict[str, Any]] = []
        self.exhausted: list[str] = []

    def attempt_settled(self, provider: str, fingerprint: str, **seen: Any) -> None:
        self.settled.append({"provider": provider, "fingerprint": fingerprint, **seen})

    def provider_exhausted(self, provider: str) -> None:
        self.exhausted.append(provider)


class Events:
    def __init__(self, into: list[UsageEvent]) -> None:
        self.into = into

    def record(self, event: UsageEvent) -> None:
        self.into.append(event)


class Parts:
    def __init__(self, keys: int = 2, threshold: int = 5) -> None:
        self.config = provider(keys=keys)
        pool = KeyPool(keys, RoundRobin(), breaker=CircuitBreaker(threshold, 60))
        self.store = MemoryStateStore({"alpha": pool}, rng=random.Random(0))
        self.clock = Clock()
        self.observer = Recorder()
        self.usage: list[UsageEvent] = []
        self.settlement = Settlement(
            self.store, sink=Events(self.usage), clock=self.clock, observer=self.observer
        )

    async def lease(self) -> Lease:
        grant = await self.store.acquire("alpha", self.clock(), Ask())
        assert grant.index is not None
        lease = self.settlement.lease(self.config, grant.index, "m", None)
        lease.started_at = self.clock()
        return lease


class TestSettled:
    async def test_duration_and_the_key_state_read_after_the_release(self):
        parts = Parts()
        lease = await parts.lease()
        parts.clock.now += 0.4
        await lease.finish(Outcome.OK, usage=Usage(1, 2, 3))
        [seen] = parts.observer.settled
        assert seen["fingerprint"] == parts.config.keys[0].fingerprint
        assert parts.usage[0].seconds == pytest.approx(0.4)  # the duration comes with the usage
        assert (seen["key_state"], seen["circuit"], seen["quota_exceeded"]) == (
            "active",
            "closed",
            False,
        )

    async def test_a_rate_limit_is_seen_as_the_cooling_state_at_once(self):
        parts = Parts()
        lease = await parts.lease()
        await lease.finish(Outcome.RATE_LIMITED, RateLimitSignal(retry_after_s=30))
        [seen] = parts.observer.settled
        assert (seen["key_state"], seen["reason"]) == ("rate_limited", "rate_limited")

    async def test_a_key_out_of_quota_is_failed_and_flagged(self):
        parts = Parts()
        lease = await parts.lease()
        await lease.finish(Outcome.QUOTA_EXCEEDED)
        [seen] = parts.observer.settled
        assert (seen["key_state"], seen["quota_exceeded"]) == ("failed", True)

    async def test_the_breaker_opening_is_seen_on_the_attempt_that_opened_it(self):
        parts = Parts(threshold=2)
        for _ in range(2):
            await (await parts.lease()).finish(Outcome.SERVER_ERROR)
        assert [s["circuit"] for s in parts.observer.settled] == ["closed", "open"]

    async def test_a_cancelled_attempt_without_usage_reports_nothing(self):
        parts = Parts()
        await (await parts.lease()).finish(Outcome.CANCELLED)
        assert parts.observer.settled == []

    async def test_an_observer_that_raises_never_fails_the_settlement(self):
        parts = Parts()

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("bug")

        parts.observer.attempt_settled = broken  # type: ignore[method-assign]
        await (await parts.lease()).finish(Outcome.OK)
        assert parts.store.pools["alpha"].statuses[0].in_flight == 0


class TestCalmKeys:
    """A success of a key last read (active, closed) skips the state read for a second and
    reports nothing (its duration still comes with its usage); any other outcome makes the next
    success read again."""

    async def test_a_second_success_of_a_calm_key_is_not_reported_but_timed(self):
        parts = Parts(keys=1)
        for _ in range(2):
            await (await parts.lease()).finish(Outcome.OK)
        [first] = parts.observer.settled
        assert (first["key_state"], first["circuit"]) == ("active", "closed")
        assert [event.seconds for event in parts.usage] == [0.0, 0.0]

    async def test_the_state_is_read_again_after_a_failure_and_after_a_second(self):
        parts = Parts(keys=1)
        await (await parts.lease()).finish(Outcome.OK)
        parts.clock.now += 1.5
        await (await parts.lease()).finish(Outcome.OK)
        await (await parts.lease()).finish(Outcome.SERVER_ERROR)
        await (await parts.lease()).finish(Outcome.OK)
        states = [s["key_state"] for s in parts.observer.settled]
        assert states == ["active", "active", "active", "active"]


class TestExhausted:
    async def test_a_provider_with_no_usable_key_is_reported(self):
        parts = Parts(keys=2)
        runner = FallbackRunner(
            parts.store,
            ClientCache([parts.config], cast(Transport, object())),
            parts.settlement,
            parts.clock,
            on_exhausted=parts.observer.provider_exhausted,
        )

        async def unauthorized(client: ProviderClient) -> None:
            raise upstream.UpstreamAuthFailed("upstream 401", status=401)

        async def server_error(client: ProviderClient) -> None:
            raise upstream.UpstreamServerError("upstream 500", status=500)

        route = Route("B", (parts.config,), "m")
        with pytest.raises(AllKeysFailed):
            await runner.run(route, server_error)
        assert parts.observer.exhausted == []  # both keys failed once: still usable
        with pytest.raises(AllKeysFailed):
            await runner.run(route, unauthorized)
        assert parts.observer.exhausted == ["alpha"]  # both keys now failed: none left
