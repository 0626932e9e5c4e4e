"""The Redis store as several instances see it: one cursor, one budget, one breaker, live counts."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from app.keys.breaker import CircuitBreaker, CircuitState
from app.keys.model import NO_SIGNAL, Ask, KeyState, Outcome, RateLimitSignal, Release
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.state.base import KeyLayout
from app.state.redis import RedisStateStore
from app.state.redis_scripts import INSTANCE_TTL_S, RECORD_TTL_S, TRIAL_LEASE_S
from tests.integration.state.conftest import Namespace

T0 = 50_000.0
GAP = 0.1 * (1 + REQUEST_HEADROOM)  # 600 RPM


def instance(
    ns: Namespace,
    size: int = 4,
    *,
    strategy: str = "round_robin",
    weights: tuple[float, ...] = (),
    pace: Pace | None = None,
    breaker: tuple[int, float] = (5, 60.0),
) -> RedisStateStore:
    """One gateway process's view of provider "p"; several share the namespace."""
    pool = KeyPool(
        size,
        make_strategy(strategy, weights),
        pace=pace or Pace(),
        breaker=CircuitBreaker(*breaker),
    )
    return ns.store({"p": pool})


async def serve(store: RedisStateStore, now: float = T0, ask: Ask | None = None) -> int | None:
    """One attempt that succeeds at once."""
    grant = await store.acquire("p", now, ask or Ask())
    if grant.index is not None:
        await store.release(Release("p", grant.index, Outcome.OK, now))
    return grant.index


class TestOnePoolForEveryInstance:
    async def test_instances_take_turns_on_one_round_robin_cursor(self, redis_ns: Namespace):
        a, b = instance(redis_ns), instance(redis_ns)
        order = [a, a, b, a, b, b, a, b]
        assert [await serve(store) for store in order] == [0, 1, 2, 3, 0, 1, 2, 3]

    async def test_a_key_disabled_through_one_instance_is_skipped_by_the_other(
        self, redis_ns: Namespace
    ):
        a, b = instance(redis_ns), instance(redis_ns)
        await a.set_disabled("p", 1, True)
        assert {await serve(b) for _ in range(6)} == {0, 2, 3}
        await b.set_disabled("p", 1, False)
        assert 1 in {await serve(a) for _ in range(4)}

    async def test_a_cooldown_one_instance_learned_holds_for_the_other(self, redis_ns: Namespace):
        a, b = instance(redis_ns, 2), instance(redis_ns, 2)
        grant = await a.acquire("p", T0, Ask(preferred=0))
        signal = RateLimitSignal(retry_after_s=30)
        await a.release(Release("p", 0, Outcome.RATE_LIMITED, T0, signal))
        assert grant.index == 0
        assert {await serve(b, T0 + 1) for _ in range(3)} == {1}
        await b.set_disabled("p", 1, True)
        refused = await a.acquire("p", T0 + 1, Ask())
        assert (refused.index, refused.refused) == (None, "rate_limited")
        assert refused.wait_s == pytest.approx(29)
        assert await serve(b, T0 + 31, Ask(preferred=0)) == 0

    async def test_paced_turns_are_never_booked_twice_across_instances(self, redis_ns: Namespace):
        a, b = instance(redis_ns, 1, pace=Pace(rpm=600)), instance(redis_ns, 1, pace=Pace(rpm=600))
        ask = Ask(reserve=True, max_queue_s=1.0)
        delays = [(await store.acquire("p", T0, ask)).delay_s for store in (a, b, a, b, b)]
        assert delays == pytest.approx([0.0, GAP, 2 * GAP, 3 * GAP, 4 * GAP])

    async def test_the_provider_rotation_of_path_a_is_shared(self, redis_ns: Namespace):
        a, b = instance(redis_ns), instance(redis_ns)
        offsets = [await store.next_provider_offset(3) for store in (a, b, b, a, b)]
        assert offsets == [0, 1, 2, 0, 1]


class TestInFlight:
    async def test_a_crashed_instance_stops_pinning_a_key_once_its_heartbeat_expires(
        self, redis_ns: Namespace
    ):
        crashed, b = instance(redis_ns, 2, strategy="least_busy"), instance(redis_ns, 2)
        await crashed.heartbeat(T0)
        assert (await crashed.acquire("p", T0, Ask())).index == 0  # never released
        assert [k.in_flight for k in (await b.snapshot("p", T0 + 1)).keys] == [1, 0]
        later = T0 + INSTANCE_TTL_S + 1
        assert [k.in_flight for k in (await b.snapshot("p", later)).keys] == [0, 0]

    async def test_a_live_instance_keeps_its_requests_counted(self, redis_ns: Namespace):
        busy, b = instance(redis_ns, 2), instance(redis_ns, 2)
        await busy.heartbeat(T0)
        await busy.acquire("p", T0, Ask())
        await busy.heartbeat(T0 + INSTANCE_TTL_S)
        later = T0 + INSTANCE_TTL_S + 1
        assert [k.in_flight for k in (await b.snapshot("p", later)).keys] == [1, 0]

    async def test_restating_counts_keeps_a_grant_whose_answer_is_still_on_its_way(
        self, redis_ns: Namespace
    ):
        """The heartbeat restates this instance's counts from the grants it holds; an acquire
        queued ahead of it is counted in Redis before its answer arrives, and must stay."""
        a, b = instance(redis_ns, 2), instance(redis_ns, 2)
        asked = asyncio.ensure_future(a.acquire("p", T0, Ask()))
        await asyncio.sleep(0)  # one loop turn: the acquire is queued first
        restated = await a.shared_pool("p", T0, mine={}, asking=1)
        assert (await asked).index == 0
        assert [k.in_flight for k in restated.keys] == [1, 0]
        healed = await a.shared_pool("p", T0, mine={}, asking=0)  # nothing held: a lost count
        assert [k.in_flight for k in healed.keys] == [0, 0]
        assert [k.in_flight for k in (await b.snapshot("p", T0)).keys] == [0, 0]

    async def test_least_busy_counts_every_instance_in_flight(self, redis_ns: Namespace):
        a = instance(redis_ns, 2, strategy="least_busy")
        b = instance(redis_ns, 2, strategy="least_busy")
        first = await a.acquire("p", T0, Ask())
        second = await b.acquire("p", T0, Ask())
        assert {first.index, second.index} == {0, 1}


class TestBreaker:
    async def open_breaker(self, store: RedisStateStore) -> None:
        for _ in range(2):
            grant = await store.acquire("p", T0, Ask())
            assert grant.index is not None
            await store.release(Release("p", grant.index, Outcome.SERVER_ERROR, T0))

    async def test_one_instance_opens_it_for_all_and_one_trial_goes_at_half_open(
        self, redis_ns: Namespace
    ):
        a = instance(redis_ns, breaker=(2, 10.0))
        b = instance(redis_ns, breaker=(2, 10.0))
        await self.open_breaker(a)
        assert (await b.acquire("p", T0 + 1, Ask())).refused == "circuit_open"
        assert (await b.snapshot("p", T0 + 10)).circuit is CircuitState.HALF_OPEN
        trial = await a.acquire("p", T0 + 10, Ask())
        assert trial.index is not None
        assert (await b.acquire("p", T0 + 10, Ask())).refused == "circuit_open"
        await a.release(Release("p", trial.index, Outcome.OK, T0 + 11))
        assert await serve(b, T0 + 11) is not None
        assert (await b.snapshot("p", T0 + 11)).circuit is CircuitState.CLOSED

    async def test_a_trial_whose_instance_vanished_is_given_up_after_its_lease(
        self, redis_ns: Namespace
    ):
        a = instance(redis_ns, breaker=(2, 10.0))
        b = instance(redis_ns, breaker=(2, 10.0))
        await self.open_breaker(a)
        assert (await a.acquire("p", T0 + 10, Ask())).index is not None  # a dies holding it
        assert (await b.acquire("p", T0 + 11, Ask())).refused == "circuit_open"
        assert (await b.acquire("p", T0 + 10 + TRIAL_LEASE_S, Ask())).index is not None


class TestStrategies:
    async def test_weighted_never_picks_a_key_of_weight_zero(self, redis_ns: Namespace):
        store = instance(redis_ns, 3, strategy="weighted", weights=(1, 0, 3))
        picks = Counter([await serve(store) for _ in range(200)])
        assert set(picks) == {0, 2}
        assert picks[2] > picks[0]

    async def test_random_spreads_over_every_free_key(self, redis_ns: Namespace):
        store = instance(redis_ns, 4, strategy="random")
        assert {await serve(store) for _ in range(80)} == {0, 1, 2, 3}


class TestStoredState:
    async def test_everything_lives_under_the_prefix_and_names_keys_by_index_only(
        self, redis_ns: Namespace
    ):
        store = instance(redis_ns)
        await store.heartbeat(T0)
        await serve(store)
        await store.next_provider_offset(2)
        assert await redis_ns.keys() == [
            f"{redis_ns.prefix}instances",
            f"{redis_ns.prefix}pool:p",
            f"{redis_ns.prefix}providers:cursor",
        ]
        fields: list[bytes] = await redis_ns.client.hkeys(f"{redis_ns.prefix}pool:p")  # type: ignore[misc]
        assert sorted(f.decode() for f in fields) == ["0", "meta"]

    async def test_a_providers_record_expires_a_week_after_the_last_heartbeat(
        self, redis_ns: Namespace
    ):
        store = instance(redis_ns)
        key = f"{redis_ns.prefix}pool:p"
        week_ms = RECORD_TTL_S * 1000
        await serve(store)
        assert week_ms - 60_000 < await redis_ns.client.pttl(key) <= week_ms  # set on creation
        await redis_ns.client.pexpire(key, 5_000)  # as if the week had nearly passed
        await serve(store)
        assert await redis_ns.client.pttl(key) <= 5_000  # requests alone do not renew it
        await store.shared_pool("p", T0, {}, 0)  # this instance's heartbeat
        assert week_ms - 60_000 < await redis_ns.client.pttl(key) <= week_ms

    async def test_budgets_and_cooldowns_of_a_lone_instance_join_the_shared_record(
        self, redis_ns: Namespace
    ):
        a, b = instance(redis_ns, 2), instance(redis_ns, 2)
        alone = KeyPool(2, make_strategy("round_robin"))
        alone.statuses[0].tat_requests = T0 + 5
        alone.statuses[1].state = KeyState.RATE_LIMITED
        alone.statuses[1].cooldown_until, alone.statuses[1].announced = T0 + 20, True
        await a.merge("p", alone, T0)
        keys = (await b.snapshot("p", T0)).keys
        assert keys[0].tat_requests == T0 + 5
        assert (keys[1].state, keys[1].cooldown_until) == (KeyState.RATE_LIMITED, T0 + 20)

    async def test_a_learned_budget_is_spent_by_every_instance(self, redis_ns: Namespace):
        a, b = instance(redis_ns, 1), instance(redis_ns, 1)
        signal = RateLimitSignal(remaining_requests=2, reset_requests_s=30)
        grant = await a.acquire("p", T0, Ask())
        await a.release(Release("p", 0, Outcome.OK, T0, signal))
        assert grant.index == 0
        assert (await a.acquire("p", T0, Ask())).index == 0
        assert (await b.acquire("p", T0, Ask())).index == 0  # the last one: cools the key
        assert (await b.acquire("p", T0, Ask())).refused == "rate_limited"
        await a.release(Release("p", 0, Outcome.OK, T0, NO_SIGNAL))


async def test_one_instance_at_a_time_claims_a_key_probe(redis_ns: Namespace) -> None:
    """Recovery probes across instances: a short per-key Redis lock, lapsing by itself."""
    pools = {"p": KeyPool(2, make_strategy("round_robin"))}
    first, second = redis_ns.store(pools), redis_ns.store(pools)
    assert await first.claim_probe("p", 0, 0.2)
    assert not await second.claim_probe("p", 0, 0.2)
    assert await second.claim_probe("p", 1, 0.2)  # another key: its own lock
    # the claim lapses by itself (no release on the probe's path): Redis's own TTL, read back
    ttl_ms = await redis_ns.client.pttl(f"{redis_ns.prefix}probe:p:0")
    assert 0 < ttl_ms <= 200
    await redis_ns.client.delete(f"{redis_ns.prefix}probe:p:0")  # as if it had expired
    assert await second.claim_probe("p", 0, 0.2)


async def test_a_probe_claim_follows_its_key_when_the_key_list_changes(redis_ns: Namespace) -> None:
    """Claims are named by the key's record (vault keys "v<id>"), not its position."""
    first = redis_ns.store({"p": KeyPool(3, make_strategy("round_robin"))})
    second = redis_ns.store({"p": KeyPool(3, make_strategy("round_robin"))})
    layout = KeyLayout((0, 1, 2), ("v1", "v2", "v3"), (1.0, 1.0, 1.0))
    first.resize("p", layout)
    second.resize("p", layout)
    assert await first.claim_probe("p", 2, 5.0)  # key v3
    second.resize("p", KeyLayout((1, 2), ("v2", "v3"), (1.0, 1.0)))  # v1 deleted: v3 now at 1
    assert not await second.claim_probe("p", 1, 5.0)  # still v3, claimed by the first
    assert await second.claim_probe("p", 0, 5.0)  # v2: free
