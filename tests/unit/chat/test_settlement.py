"""The one owner of leases: each lease settles once, and its settlement reaches every consumer."""

from __future__ import annotations

import random

from app.chat.settlement import Lease, Settlement
from app.config import ApiKey, ProviderConfig, fingerprint
from app.keys.model import Ask, KeyState, KeyStatus, Outcome, RateLimitSignal
from app.keys.pool import KeyPool
from app.keys.strategies import RoundRobin
from app.providers.client import Usage
from app.state.memory import MemoryStateStore
from tests.support.scripted import RecordingSink

T0 = 1_000.0
PROVIDER = ProviderConfig(
    name="alpha",
    base_url="http://alpha.invalid/v1",
    default_model="m",
    keys=(ApiKey("alpha-secret-0", fingerprint("alpha", 0, "alpha-secret-0")),),
)


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


class Parts:
    def __init__(self) -> None:
        self.store = MemoryStateStore({"alpha": KeyPool(1, RoundRobin())}, rng=random.Random(0))
        self.sink = RecordingSink()
        self.clock = Clock()
        self.nudges = 0
        self.settlement = Settlement(self.store, self.sink, self.clock, on_key_failure=self.nudge)

    def nudge(self) -> None:
        self.nudges += 1

    async def granted(self, user_id: str | None = "u1") -> Lease:
        grant = await self.store.acquire("alpha", self.clock(), Ask())
        assert grant.index == 0
        lease = self.settlement.lease(PROVIDER, 0, "m", 2, user_id)
        lease.started_at = self.clock()
        return lease

    @property
    def status(self) -> KeyStatus:
        return self.store.pools["alpha"].statuses[0]


class TestOnce:
    async def test_a_lease_finished_twice_counts_one_request(self):
        parts = Parts()
        lease = await parts.granted()
        await lease.finish(Outcome.OK, usage=Usage(3, 4, 7))
        await lease.finish(Outcome.SERVER_ERROR)
        assert (parts.status.requests, parts.status.errors, parts.status.in_flight) == (1, 0, 0)
        assert len(parts.sink.events) == 1


class TestFanOut:
    async def test_a_success_frees_the_key_and_records_who_used_which_model(self):
        parts = Parts()
        lease = await parts.granted(user_id="alice")
        parts.clock.now += 0.25
        await lease.finish(Outcome.OK, usage=Usage(3, 4, 7))
        [event] = parts.sink.events
        assert (event.provider, event.key_index, event.key_group) == ("alpha", 0, 2)
        assert (event.model, event.user_id) == ("m", "alice")
        assert (event.prompt_tokens, event.completion_tokens, event.at) == (3, 4, T0 + 0.25)
        assert event.fingerprint == PROVIDER.keys[0].fingerprint
        assert parts.status.latency_ewma == 0.25
        assert parts.nudges == 0

    async def test_a_failing_key_wakes_the_prober_and_counts_an_error(self):
        parts = Parts()
        lease = await parts.granted()
        await lease.finish(Outcome.AUTH_FAILED)
        assert parts.nudges == 1
        assert parts.status.state is KeyState.FAILED
        assert parts.sink.events[0].error

    async def test_a_rate_limit_cools_the_key_and_is_counted_as_such(self):
        parts = Parts()
        lease = await parts.granted()
        await lease.finish(Outcome.RATE_LIMITED, RateLimitSignal(retry_after_s=30))
        assert parts.status.state is KeyState.RATE_LIMITED
        assert parts.status.cooldown_until == T0 + 30
        assert parts.sink.events[0].rate_limited
        assert parts.nudges == 0

    async def test_a_cancelled_attempt_without_usage_frees_the_key_and_records_nothing(self):
        parts = Parts()
        lease = await parts.granted()
        await lease.finish(Outcome.CANCELLED)
        assert parts.status.in_flight == 0
        assert parts.sink.events == []
