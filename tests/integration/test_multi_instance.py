"""Two gateways, one Redis, one pool: shared budgets, one cursor, shared key states, outages.

The gateways are two app instances (each its own uvicorn server, event loop and Redis client)
in threads of the test process, pointed at the same Redis as separate hosts would be.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.redis_server import SHARED_URL, RedisServer, redis_server, shared_prefix
from tests.support.servers import GatewayServer, provider_env
from tests.support.traffic import post_all

TOKEN = "multi-instance-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"messages": [{"role": "user", "content": "hi"}]}
KEYS = ["k0", "k1", "k2", "k3"]


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_prefix() as namespace:
        yield namespace


def two_gateways(
    make_gateway: GatewayFactory, env: dict[str, str], url: str, prefix: str = "keypool:"
) -> tuple[GatewayServer, GatewayServer]:
    shared = {**env, "REDIS_URL": url, "KEYPOOL_REDIS_PREFIX": prefix, "ADMIN_TOKEN": TOKEN}
    return make_gateway(shared), make_gateway(shared)


def upstream(fake: FakeProviderThread) -> dict[str, Counter[str]]:
    return {key: Counter(c["status"]) for key, c in fake.stats()["keys"].items()}


def key_indexes(answers: list[tuple[int, dict[str, Any]]]) -> Counter[int]:
    assert [status for status, _ in answers] == [200] * len(answers)
    return Counter(int(body["key_index"]) for _, body in answers)


def chat(gateway: GatewayServer, n: int) -> Counter[int]:
    return key_indexes(asyncio.run(post_all(gateway.base_url, "/api/chat", [({}, HI)] * n, 4)))


def key_states(gateway: GatewayServer) -> list[str]:
    answer = httpx.get(f"{gateway.base_url}/api/admin/api-keys/health", headers=AUTH)
    assert answer.status_code == 200
    return [k["state"] for k in answer.json()["providers"][0]["keys"]]


def switch(gateway: GatewayServer, index: int, action: str) -> None:
    url = f"{gateway.base_url}/api/admin/api-keys/alpha/{index}/{action}"
    assert httpx.post(url, headers=AUTH).status_code == 200


class TestOnePool:
    async def test_paced_load_on_both_instances_never_exceeds_a_key_budget(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
    ):
        # The fake refuses an 11th request in any second; the gateways pace each key at 9.5/s.
        fake = make_fake({"k0": {"rps": 10}, "k1": {"rps": 10}})
        env = provider_env("alpha", fake, ["k0", "k1"], rpm_per_key="570")
        gw1, gw2 = two_gateways(make_gateway, {**env, "PACING_MAX_WAIT_S": "3"}, SHARED_URL, prefix)
        started = time.monotonic()
        answers = await asyncio.gather(
            post_all(gw1.base_url, "/api/chat", [({}, HI)] * 16, 16),
            post_all(gw2.base_url, "/api/chat", [({}, HI)] * 16, 16),
        )
        elapsed = time.monotonic() - started
        served = key_indexes(answers[0] + answers[1])
        assert served == {0: 16, 1: 16}
        assert upstream(fake) == {"k0": Counter({"200": 16}), "k1": Counter({"200": 16})}
        # Alone, each gateway would have sent each key 9.5 requests a second: 19 between them.
        assert elapsed >= 15 * 60 / 570

    async def test_round_robin_is_one_cursor_across_instances(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
    ):
        fake = make_fake({k: {} for k in KEYS})
        # The exact hand-out order of one cursor: without grants asked ahead, which hand each
        # instance's next key out one request later (tests/integration/state/test_spares.py).
        env = {**provider_env("alpha", fake, KEYS), "REDIS_SPARE_GRANT_MS": "0"}
        gw1, gw2 = two_gateways(make_gateway, env, SHARED_URL, prefix)
        async with httpx.AsyncClient(timeout=10) as http:
            turns = [await http.post(f"{g.base_url}/api/chat", json=HI) for g in (gw1, gw2) * 4]
        assert [t.json()["key_index"] for t in turns] == [0, 1, 2, 3, 0, 1, 2, 3]
        answers = await asyncio.gather(
            post_all(gw1.base_url, "/api/chat", [({}, HI)] * 300, 4),
            post_all(gw2.base_url, "/api/chat", [({}, HI)] * 300, 4),
        )
        served = key_indexes(answers[0] + answers[1])
        assert all(abs(served[i] - 150) <= 2 for i in range(4)), served
        assert max(served.values()) - min(served.values()) <= 2

    def test_a_key_disabled_on_one_instance_is_skipped_by_the_other(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
    ):
        fake = make_fake({k: {} for k in KEYS})
        gw1, gw2 = two_gateways(make_gateway, provider_env("alpha", fake, KEYS), SHARED_URL, prefix)
        switch(gw1, 1, "disable")
        assert set(chat(gw2, 12)) == {0, 2, 3}
        assert key_states(gw2)[1] == "disabled"
        switch(gw2, 1, "enable")
        assert 1 in chat(gw1, 4)

    def test_a_key_cooled_or_failed_on_one_instance_is_skipped_by_the_other(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
    ):
        behaviours = {
            "k0": {"mode": "rate_limited", "retry_after_s": 30},
            "k1": {"mode": "forbidden"},
        }
        fake = make_fake({k: behaviours.get(k, {}) for k in KEYS})
        # Exact upstream counts follow the rotation's positions, which a grant asked ahead and
        # handed back unused (after gw1's 429) would skip: without them here.
        env = {**provider_env("alpha", fake, KEYS), "REDIS_SPARE_GRANT_MS": "0"}
        gw1, gw2 = two_gateways(make_gateway, env, SHARED_URL, prefix)
        assert chat(gw1, 1) == {2: 1}  # after a 429 on k0 and a 403 on k1
        assert set(chat(gw2, 12)) == {2, 3}
        assert {k: sum(c.values()) for k, c in upstream(fake).items()} == {
            "k0": 1,
            "k1": 1,
            "k2": 7,
            "k3": 6,
        }
        assert key_states(gw2)[:2] == ["rate_limited", "failed"]


class Traffic:
    """Clients chatting through both gateways until told to stop, every answer kept."""

    def __init__(self, gateways: tuple[GatewayServer, ...], clients_each: int = 2) -> None:
        self.gateways = gateways
        self.clients_each = clients_each
        self.statuses: list[int] = []
        self.stopping = asyncio.Event()

    async def client(self, http: httpx.AsyncClient, gateway: GatewayServer) -> None:
        while not self.stopping.is_set():
            answer = await http.post(f"{gateway.base_url}/api/chat", json=HI)
            self.statuses.append(answer.status_code)

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.gather(
                *(self.client(http, g) for g in self.gateways for _ in range(self.clients_each))
            )

    async def more(self, n: int, timeout: float = 10.0) -> None:
        """Wait until `n` more answers arrived."""
        target, deadline = len(self.statuses) + n, time.monotonic() + timeout
        while len(self.statuses) < target:
            assert time.monotonic() < deadline, "traffic stalled"
            await asyncio.sleep(0.01)


async def readiness(gateway: GatewayServer) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(f"{gateway.base_url}/readyz")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


async def until_redis(gateways: tuple[GatewayServer, ...], state: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while [(await readiness(g))["checks"]["redis"] for g in gateways] != [state] * len(gateways):
        assert time.monotonic() < deadline, f"redis not {state} within {timeout}s"
        await asyncio.sleep(0.02)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


class TestRedisOutage:
    async def test_killing_redis_mid_run_costs_no_request_and_shared_state_resumes(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        own_redis: RedisServer,
        caplog: pytest.LogCaptureFixture,
    ):
        fake = make_fake({k: {} for k in KEYS})
        gateways = two_gateways(make_gateway, provider_env("alpha", fake, KEYS), own_redis.url)
        traffic = Traffic(gateways)
        running = asyncio.create_task(traffic.run())
        await traffic.more(40)
        own_redis.kill()
        await traffic.more(40)
        for gateway in gateways:
            degraded = {"status": "degraded", "checks": {"database": "ok", "redis": "down"}}
            assert await readiness(gateway) == degraded
        own_redis.start()
        await until_redis(gateways, "ok")
        await traffic.more(40)
        traffic.stopping.set()
        await running
        assert set(traffic.statuses) == {200}
        lost = [r for r in caplog.records if r.name == "keypool.state" and r.levelno >= 30]
        assert len(lost) == 2  # one warning per gateway for the whole outage

        gw1, gw2 = gateways
        await asyncio.to_thread(switch, gw1, 0, "disable")
        # gw2 may hold key 0 granted ahead just before the switch (kept at most
        # REDIS_SPARE_GRANT_MS): it serves one request at most, none after it.
        assert (await asyncio.to_thread(chat, gw2, 8))[0] <= 1
