"""Redis going away and coming back under the store: local service, one warning, 1/N, resumption."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from app.keys.breaker import CircuitBreaker
from app.keys.model import Ask, KeyState, Outcome, RateLimitSignal, Release
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.state.base import KeyLayout
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore
from app.state.redis import RedisStateStore, connect, describe
from tests.support.redis_server import RedisServer, free_port, redis_server

GAP = 0.1 * (1 + REQUEST_HEADROOM)  # 600 RPM, the full budget of one key


def pools(size: int, pace: Pace) -> dict[str, KeyPool]:
    pool = KeyPool(size, make_strategy("round_robin"), pace=pace, breaker=CircuitBreaker())
    return {"p": pool}


def degrading(url: str, size: int = 4, pace: Pace | None = None) -> DegradingStore:
    pace = pace or Pace()
    shared = RedisStateStore(connect(url, 0.5), pools(size, pace), prefix="keypool:")
    local = MemoryStateStore(pools(size, pace))
    return DegradingStore(
        shared, local, address=describe(url), heartbeat_s=0.05, reconnect_s=(0.02, 0.2)
    )


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.01)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "keypool.state" and r.levelno == logging.WARNING
    ]


async def serve(store: DegradingStore, ask: Ask | None = None) -> int | None:
    grant = await store.acquire("p", time.time(), ask or Ask())
    if grant.index is not None:
        await store.release(Release("p", grant.index, Outcome.OK, time.time()))
    return grant.index


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


@pytest.fixture(params=[Pace()], ids=["unpaced"])
async def pair(
    server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[DegradingStore, DegradingStore]]:
    """Two instances on one Redis, each having seen the other's heartbeat."""
    a, b = degrading(server.url, pace=request.param), degrading(server.url, pace=request.param)
    await a.start()
    await b.start()
    await until(lambda: a.peers == b.peers == 2, "both heartbeats seen")
    yield a, b
    await a.aclose()
    await b.aclose()


class TestUnreachableAtStart:
    async def test_requests_are_served_from_local_state_with_one_warning(
        self, caplog: pytest.LogCaptureFixture
    ):
        store = degrading(f"redis://127.0.0.1:{free_port()}/0")
        await store.start()
        try:
            assert store.redis_status() == "down"
            assert [await serve(store) for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
            await until(lambda: store.failed_reconnects >= 4, "reconnection attempts")
        finally:
            await store.aclose()
        assert len(warnings(caplog)) == 1
        assert "unreachable" in warnings(caplog)[0]


class TestOutage:
    async def test_an_outage_costs_no_call_and_one_warning(
        self,
        server: RedisServer,
        pair: tuple[DegradingStore, DegradingStore],
        caplog: pytest.LogCaptureFixture,
    ):
        a, b = pair
        # One shared cursor: four different keys (each instance's spare grant, asked as it is
        # handed a key, may reorder which instance gets which).
        assert sorted([await serve(s) or 0 for s in (a, b, b, a)]) == [0, 1, 2, 3]
        server.kill()
        served = [await serve(s) for s in (a, b) * 10]
        assert None not in served
        assert (a.redis_status(), b.redis_status()) == ("down", "down")
        assert len(warnings(caplog)) == 2  # one per instance, not one per call
        assert all("lost" in w and "1/2" in w for w in warnings(caplog))

    @pytest.mark.parametrize("pair", [Pace(rpm=600)], ids=["600rpm"], indirect=True)
    async def test_each_instance_keeps_to_its_share_while_cut_off(
        self, server: RedisServer, pair: tuple[DegradingStore, DegradingStore]
    ):
        a, _ = pair
        server.kill()
        ask = Ask(preferred=0, exclude={1, 2, 3}, reserve=True, max_queue_s=1.0)
        delays = [(await a.acquire("p", time.time(), ask)).delay_s for _ in range(3)]
        assert a.redis_status() == "down"
        # Two instances were alive: each now starts requests on a key half as often.
        assert delays[2] - delays[1] == pytest.approx(2 * GAP, abs=0.01)

    async def test_shared_state_resumes_with_what_happened_meanwhile(
        self, server: RedisServer, pair: tuple[DegradingStore, DegradingStore]
    ):
        a, b = pair
        server.kill()
        await serve(a)
        await a.set_disabled("p", 3, True)  # an admin switch while cut off
        server.start()
        await until(lambda: a.redis_status() == b.redis_status() == "ok", "reconnection")
        keys = (await b.snapshot("p", time.time())).keys
        assert keys[3].state is KeyState.DISABLED
        assert 3 not in {await serve(b) for _ in range(6)}
        await b.set_disabled("p", 3, False)
        assert (await a.snapshot("p", time.time())).keys[3].state is KeyState.ACTIVE


class TestCancelledCalls:
    async def test_an_acquire_cancelled_in_flight_gives_its_key_back(
        self, pair: tuple[DegradingStore, DegradingStore]
    ):
        a, b = pair
        for yields in range(6):
            task = asyncio.create_task(a.acquire("p", time.time(), Ask()))
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()
            try:
                grant = await task
            except asyncio.CancelledError:
                continue
            # The answer beat the cancellation: an ordinary grant, released as usual.
            assert grant.index is not None
            await a.release(Release("p", grant.index, Outcome.CANCELLED, time.time()))

        async def counted() -> int:
            return sum(k.in_flight for k in (await b.snapshot("p", time.time())).keys)

        deadline = time.monotonic() + 5
        while await counted():
            assert time.monotonic() < deadline, "grants still counted in flight"
            await asyncio.sleep(0.01)


class TestHealing:
    async def test_a_count_left_wrong_in_redis_is_restated_by_the_next_heartbeat(
        self, pair: tuple[DegradingStore, DegradingStore]
    ):
        """As after an outage that cut a release off: Redis counts a request of `a` that `a`
        no longer holds; `a`'s heartbeat says what it holds, and the key is free again."""
        a, b = pair
        assert (await a.shared.acquire("p", time.time(), Ask())).index is not None

        async def counted() -> int:
            return sum(k.in_flight for k in (await b.snapshot("p", time.time())).keys)

        deadline = time.monotonic() + 5
        while await counted():
            assert time.monotonic() < deadline, "the lost count was never restated"
            await asyncio.sleep(0.01)


class TestRestartBetweenCalls:
    async def test_connections_to_a_server_that_restarted_are_not_reused(self, server: RedisServer):
        store = RedisStateStore(connect(server.url, 0.5), pools(2, Pace()), prefix="keypool:")
        try:
            assert (await store.acquire("p", time.time(), Ask())).index == 0
            server.kill()
            server.start()
            for _ in range(3):  # loop turns (no waiting): the old connection reads its EOF
                await asyncio.sleep(0)
            assert (await store.acquire("p", time.time(), Ask())).index == 0  # a fresh server
        finally:
            await store.aclose()


class TestKeyListChange:
    async def test_instances_on_different_key_lists_act_on_the_same_keys_records(
        self, pair: tuple[DegradingStore, DegradingStore]
    ):
        """A vault key at 1 is deleted on `a` first: its later key moves from 3 to 2 there,
        while `b` still has the old list; both read and write that key's one record."""
        a, b = pair
        before = KeyLayout((0, 1, 2, 3), ("0", "1", "v7", "v8"), (1.0,) * 4)
        for store in (a, b):
            store.resize("p", before)
        grant = await a.acquire("p", time.time(), Ask(preferred=3))
        assert grant.index == 3
        a.resize("p", KeyLayout((0, 2, 3), ("0", "v7", "v8"), (1.0,) * 3))
        signal = RateLimitSignal(retry_after_s=60)
        await a.release(Release("p", 2, Outcome.RATE_LIMITED, time.time(), signal))
        await until(lambda: a.local.pools["p"].statuses[2].in_flight == 0, "mirror released")
        mine = (await a.snapshot("p", time.time())).keys
        theirs = (await b.snapshot("p", time.time())).keys
        assert [s.state for s in mine] == [KeyState.ACTIVE, KeyState.ACTIVE, KeyState.RATE_LIMITED]
        assert (mine[2].requests, mine[2].in_flight, mine[2].cooldown_until) == (
            theirs[3].requests,
            theirs[3].in_flight,
            theirs[3].cooldown_until,
        )
        assert (theirs[3].state, theirs[1].requests) == (KeyState.RATE_LIMITED, 0)
        assert len(theirs) == 4  # b serves its old list until its own refresh
