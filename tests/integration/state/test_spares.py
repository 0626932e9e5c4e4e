"""Grants asked ahead (app/state/spares.py) on a real Redis: a first attempt that finds its key
granted already waits no round trip, and a spare never outlives what could make it stale."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from app.keys.breaker import CircuitBreaker
from app.keys.model import Ask, KeyStatus, Outcome, RateLimitSignal, Release
from app.keys.pacing import Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore
from app.state.redis import RedisStateStore, connect, describe
from tests.support.redis_server import RedisServer, redis_server

LEARNABLE = RateLimitSignal(remaining_requests=499, reset_requests_s=0.12, limit_requests=500)


def pools(pace: Pace | None = None) -> dict[str, KeyPool]:
    strategy = make_strategy("round_robin")
    return {"p": KeyPool(4, strategy, pace=pace or Pace(), breaker=CircuitBreaker())}


@contextlib.asynccontextmanager
async def running(
    ttl_s: float = 10.0, pace: Pace | None = None
) -> AsyncIterator[tuple[RedisServer, DegradingStore]]:
    """A private Redis and one instance on it; spares kept `ttl_s` (long: only news ends them)."""
    with redis_server() as server:
        shared = RedisStateStore(connect(server.url, 5.0), pools(pace), timeout_s=5.0)
        store = DegradingStore(
            shared, MemoryStateStore(pools(pace)), address=describe(server.url), spare_ttl_s=ttl_s
        )
        await store.start()
        try:
            yield server, store
        finally:
            server.pause(False)
            await store.aclose()


async def keys(store: DegradingStore) -> list[KeyStatus]:
    """Every answer so far applied (one connection, in order), then the shared records."""
    await store.shared.drain()
    return list((await store.shared.snapshot("p", time.time())).keys)


async def first(store: DegradingStore) -> int | None:
    return (await store.acquire("p", time.time(), Ask())).index


class TestAskedAhead:
    async def test_the_next_first_attempt_gets_its_key_while_redis_answers_nothing(self):
        async with running() as (server, store):
            assert await first(store) == 0
            await store.shared.drain()  # the grant asked ahead has arrived
            server.pause(True)
            # Redis is stopped: only a grant made before can answer, and it is the rotation's
            # next key, as the acquire would have given it.
            assert await asyncio.wait_for(first(store), 2.0) == 1
            server.pause(False)
            assert await first(store) == 2
            assert store.redis_status() == "ok"

    async def test_requests_in_a_row_get_keys_in_rotation_order(self):
        async with running() as (_, store):
            order = []
            for _ in range(6):
                index = await first(store)
                order.append(index)
                assert index is not None
                await store.release(Release("p", index, Outcome.OK, time.time()))
            assert order == [0, 1, 2, 3, 0, 1]
            # One key is out ahead: counted in flight until used or handed back.
            assert [k.in_flight for k in await keys(store)] == [0, 0, 1, 0]

    async def test_an_unused_spare_is_handed_back_and_not_counted_as_a_request(self):
        async with running(ttl_s=0.05) as (_, store):
            assert await first(store) == 0
            await store.release(Release("p", 0, Outcome.OK, time.time()))
            deadline = time.monotonic() + 5
            while (await keys(store))[1].in_flight:  # handed back 50 ms after it came
                assert time.monotonic() < deadline, "the spare was never handed back"
                await asyncio.sleep(0.01)
            assert [(k.in_flight, k.requests) for k in await keys(store)] == [(0, 1)] + [(0, 0)] * 3


class TestNeverStale:
    async def test_a_failure_hands_the_spare_back(self):
        async with running() as (_, store):
            assert await first(store) == 0
            await store.shared.drain()
            assert [k.in_flight for k in await keys(store)] == [1, 1, 0, 0]
            await store.release(Release("p", 0, Outcome.SERVER_ERROR, time.time()))
            assert [(k.in_flight, k.requests) for k in await keys(store)] == [(0, 1)] + [(0, 0)] * 3

    async def test_a_spare_asked_before_a_failure_and_granted_after_it_is_not_kept(self):
        async with running() as (_, store):
            assert await first(store) == 0
            # The ask for the next key is on its way; the failure is heard before its answer.
            signal = RateLimitSignal(retry_after_s=30)
            await store.release(Release("p", 0, Outcome.RATE_LIMITED, time.time(), signal))
            assert [k.in_flight for k in await keys(store)] == [0, 0, 0, 0]

    async def test_paced_keys_get_no_spares(self):
        async with running(pace=Pace(rpm=600)) as (_, store):
            assert await first(store) == 0
            assert [k.in_flight for k in await keys(store)] == [1, 0, 0, 0]

    async def test_limits_learned_from_an_answer_end_spares(self):
        async with running() as (_, store):
            assert await first(store) == 0
            await store.release(Release("p", 0, Outcome.OK, time.time(), LEARNABLE))
            assert [k.in_flight for k in await keys(store)] == [0, 0, 0, 0]
            assert await first(store) is not None
            assert sum(k.in_flight for k in await keys(store)) == 1  # nothing asked ahead


class TestPathATurns:
    async def test_the_next_rotation_turn_is_taken_ahead(self):
        async with running() as (server, store):
            assert await store.next_provider_offset(3) == 0
            await store.shared.drain()  # the next turn has arrived
            server.pause(True)
            assert await asyncio.wait_for(store.next_provider_offset(3), 2.0) == 1
            server.pause(False)
            assert [await store.next_provider_offset(3) for _ in range(4)] == [2, 0, 1, 2]

    async def test_two_instances_still_share_one_rotation(self):
        async with running() as (server, a):
            shared = RedisStateStore(connect(server.url, 5.0), pools(), timeout_s=5.0)
            b = DegradingStore(shared, MemoryStateStore(pools()), address=describe(server.url))
            await b.start()
            try:
                turns = [await s.next_provider_offset(1_000) for s in (a, b, b, a, b, a)]
            finally:
                await b.aclose()
            # Every turn handed out once (each instance holds its next one ahead).
            assert len(set(turns)) == 6
            assert max(turns) <= 7
