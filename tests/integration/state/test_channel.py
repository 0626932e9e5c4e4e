"""The one pipelined connection under the shared key state: calls share it and keep their order,
whether the server forgets the script, has no functions, or stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from app.keys.breaker import CircuitBreaker
from app.keys.model import Ask, KeyState, Outcome, RateLimitSignal, Release
from app.keys.pacing import REQUEST_HEADROOM, Pace
from app.keys.pool import KeyPool
from app.keys.strategies import make_strategy
from app.state.channel import encode
from app.state.degrading import DegradingStore
from app.state.memory import MemoryStateStore
from app.state.redis import RedisStateStore, connect, describe
from tests.integration.state.conftest import Namespace
from tests.integration.state.test_parity import PACES, STEPS, Twins
from tests.support.redis_server import RedisServer, redis_server

T0 = 50_000.0
GAP = 0.1 * (1 + REQUEST_HEADROOM)  # 600 RPM
# A server as Redis 6 answers: no FCALL, no FUNCTION.
NO_FUNCTIONS = ("--rename-command", "FCALL", "", "--rename-command", "FUNCTION", "")


def pools(size: int = 4, pace: Pace | None = None) -> dict[str, KeyPool]:
    pool = KeyPool(
        size, make_strategy("round_robin"), pace=pace or Pace(), breaker=CircuitBreaker()
    )
    return {"p": pool}


@contextlib.asynccontextmanager
async def private(*options: str) -> AsyncIterator[tuple[RedisServer, Namespace]]:
    """A redis-server of the test's own (started with `options`) and a namespace on it."""
    with redis_server(*options) as server:
        client = connect(server.url, 2.0)
        ns = Namespace(client, "keypool:", url=server.url)
        try:
            yield server, ns
        finally:
            server.pause(False)
            for store in ns.stores:
                await store.aclose()
            await client.aclose()


async def connections(ns: Namespace) -> int:
    return int((await ns.client.info("clients"))["connected_clients"])


async def commands(ns: Namespace) -> set[str]:
    return {name.removeprefix("cmdstat_") for name in await ns.client.info("commandstats")}


class TestOneConnection:
    async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_answer(self):
        async with private() as (_, ns):
            store = ns.store(pools(4))
            before = await connections(ns)
            grants = await asyncio.gather(*(store.acquire("p", T0, Ask()) for _ in range(64)))
            # Answered in the order asked: the shared cursor went round 16 times.
            assert [g.index for g in grants] == [0, 1, 2, 3] * 16
            assert await connections(ns) == before + 1

    async def test_calls_cut_off_by_their_callers_leave_the_connection_in_use(self):
        async with private() as (_, ns):
            store = ns.store(pools(4))
            assert (await store.acquire("p", T0, Ask())).index == 0
            before = await connections(ns)
            for yields in range(4):
                task = asyncio.create_task(store.acquire("p", T0, Ask()))
                for _ in range(yields):
                    await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert (await store.acquire("p", T0, Ask(preferred=3))).index == 3
            assert await connections(ns) == before


class TestRedisWorkPerRequest:
    async def test_a_request_costs_redis_one_read_and_one_write_per_script_call(self):
        """Round robin, one instance: the acquire reads the provider's meta and the key it
        chooses in one read, and no call renews the record's expiry (the heartbeat does)."""
        async with private() as (_, ns):
            store = ns.store(pools(4))
            for _ in range(3):  # the record exists and this instance knows the cursor
                await store.acquire("p", T0, Ask())
            await ns.client.config_resetstat()
            for n in range(20):
                grant = await store.acquire("p", T0 + n, Ask())
                assert grant.index == (3 + n) % 4
                assert grant.index is not None
                store.post_release(Release("p", grant.index, Outcome.OK, T0 + n), lambda _: None)
            await store.drain()
            stats = await ns.client.info("commandstats")
            calls = {name.removeprefix("cmdstat_"): s["calls"] for name, s in stats.items()}
            reads = calls.get("hget", 0) + calls.get("hmget", 0) + calls.get("hgetall", 0)
            assert (calls["fcall"], reads, calls["hset"]) == (40, 40, 40)
            assert "pexpire" not in calls

    async def test_another_instance_moving_the_cursor_costs_one_read_more_not_a_wrong_key(
        self,
    ):
        async with private() as (_, ns):
            a, b = ns.store(pools(4)), ns.store(pools(4))
            order = [a, a, b, a, b, b, a]
            assert [(await s.acquire("p", T0, Ask())).index for s in order] == [0, 1, 2, 3, 0, 1, 2]


class TestReleasesAreNotAwaited:
    async def test_a_429_reported_while_redis_is_busy_still_cools_the_key_for_the_next_acquire(
        self,
    ):
        """The release returns at once (Redis is not answering yet); the next acquire, queued
        behind it on the same connection, already sees the cooldown."""
        async with private() as (server, _):
            shared = RedisStateStore(connect(server.url, 5.0), pools(2), timeout_s=5.0)
            store = DegradingStore(shared, MemoryStateStore(pools(2)), address=describe(server.url))
            await store.start()
            try:
                now = time.time()
                assert (await store.acquire("p", now, Ask(preferred=0))).index == 0
                server.pause(True)
                signal = RateLimitSignal(retry_after_s=30)
                done = Release("p", 0, Outcome.RATE_LIMITED, now, signal)
                await asyncio.wait_for(store.release(done), 1.0)
                waiting = asyncio.create_task(store.acquire("p", now, Ask(preferred=0)))
                server.pause(False)
                assert (await waiting).index == 1
                keys = (await store.snapshot("p", now)).keys
                assert (keys[0].state, keys[0].in_flight) == (KeyState.RATE_LIMITED, 0)
                assert store.redis_status() == "ok"
            finally:
                await store.aclose()


class TestReservedTurns:
    async def test_a_turn_counts_from_when_it_was_booked_not_from_when_the_answer_came(self):
        """A paced key's next turn is GAP after the previous one; the answer that books it comes
        back late (Redis busy), so the caller is told to wait that much less."""
        async with private() as (server, _):
            pace = Pace(rpm=600)
            clock = [1_000.0]
            shared = RedisStateStore(connect(server.url, 5.0), pools(1, pace), timeout_s=5.0)
            store = DegradingStore(
                shared,
                MemoryStateStore(pools(1, pace)),
                address=describe(server.url),
                clock=lambda: clock[0],
            )
            await store.start()
            try:
                ask = Ask(reserve=True, max_queue_s=1.0)
                assert (await store.acquire("p", clock[0], ask)).delay_s == 0
                server.pause(True)
                booking = asyncio.create_task(store.acquire("p", clock[0], ask))
                await asyncio.sleep(0)  # the acquire is on its way; Redis does not answer yet
                clock[0] += 0.03
                server.pause(False)
                assert (await booking).delay_s == pytest.approx(GAP - 0.03)
            finally:
                await store.aclose()


class TestServersWithoutTheScript:
    async def test_a_server_without_functions_runs_the_plain_script_and_decides_alike(self):
        async with private(*NO_FUNCTIONS) as (_, ns):
            twins = Twins(ns, "round_robin", PACES["rpm_burst_and_tpm"], 2, posted=True)
            for n in range(STEPS // 2):
                await twins.step(n)
            used = await commands(ns)
            assert "evalsha" in used
            assert "fcall" not in used

    @pytest.mark.parametrize("functions", [True, False], ids=["function", "script"])
    async def test_a_server_that_forgets_the_script_mid_run_loses_and_reorders_nothing(
        self, functions: bool
    ):
        """The flush is queued on the store's own connection, so the calls right behind it
        (posted releases included) meet a server without the script."""
        async with private(*(() if functions else NO_FUNCTIONS)) as (_, ns):
            twins = Twins(ns, "least_busy", PACES["rpm_and_tpm"], 4, posted=True)
            flush = encode("FUNCTION", "FLUSH") if functions else encode("SCRIPT", "FLUSH")
            flushed: list[object] = []
            for n in range(STEPS):
                if n % 40 == 20:
                    twins.shared._script.channel.send(flush, flushed.append)
                await twins.step(n)
            assert flushed == ["OK"] * (STEPS // 40)
            # Loaded once at the start, and again after every flush (each call behind it went
            # again after that one load).
            stats = await ns.client.info("commandstats")
            loads = stats["cmdstat_function|load" if functions else "cmdstat_script|load"]["calls"]
            assert loads == len(flushed) + 1


class TestAServerThatStopsAnswering:
    async def test_calls_give_up_after_the_timeout_and_requests_are_served_locally(self):
        async with private() as (server, _):
            shared = RedisStateStore(connect(server.url, 0.2), pools(2), timeout_s=0.2)
            local = MemoryStateStore(pools(2))
            store = DegradingStore(
                shared, local, address=describe(server.url), reconnect_s=(0.05, 0.1)
            )
            await store.start()
            try:
                assert (await store.acquire("p", time.time(), Ask())).index == 0
                server.pause(True)
                grant = await asyncio.wait_for(store.acquire("p", time.time(), Ask()), 5.0)
                assert grant.index is not None
                assert store.redis_status() == "down"
                server.pause(False)
            finally:
                await store.aclose()


async def test_the_provider_rotation_shares_the_connection() -> None:
    async with private() as (_, ns):
        store = ns.store(pools(2))
        before = await connections(ns)
        offsets = await asyncio.gather(*(store.next_provider_offset(3) for _ in range(6)))
        assert offsets == [0, 1, 2, 0, 1, 2]
        assert await connections(ns) == before + 1
