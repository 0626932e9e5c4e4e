"""Rate-limit-aware scheduling over real HTTP: pacing, cooldowns, learned limits, the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for

TOKEN = "admin-token-for-scheduling-tests"
HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def upstream_statuses(fake: FakeProviderThread) -> dict[str, int]:
    totals: dict[str, int] = {}
    for counters in fake.stats()["keys"].values():
        for status, n in counters["status"].items():
            totals[status] = totals.get(status, 0) + n
    return totals


def served(fake: FakeProviderThread) -> dict[str, int]:
    return {key: c["requests"] for key, c in fake.stats()["keys"].items()}


def health(client: httpx.Client, gateway: GatewayServer) -> dict[str, Any]:
    answer = client.get(
        f"{gateway.base_url}/api/admin/api-keys/health",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def circuit(client: httpx.Client, gateway: GatewayServer, provider: str) -> str:
    entry = next(p for p in health(client, gateway)["providers"] if p["name"] == provider)
    state: str = entry["circuit"]
    return state


class TestPacing:
    async def test_a_configured_budget_means_no_upstream_429_and_fast_429s_for_the_excess(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {"rps": 5}, "k1": {"rps": 5}})
        env = provider_env("alpha", fake, ["k0", "k1"], rpm_per_key="300")
        # A one-second deadline: the excess cannot be served in time, so it is refused.
        gateway = make_gateway({**env, "PACING_MAX_WAIT_S": "1", "REQUEST_DEADLINE_S": "1"})
        async with httpx.AsyncClient(timeout=10) as client:
            answers = await asyncio.gather(
                *(client.post(f"{gateway.base_url}/api/chat", json=HI) for _ in range(16))
            )
        ok = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        assert len(ok) + len(refused) == 16
        assert upstream_statuses(fake) == {"200": len(ok)}  # not one upstream 429
        # Two keys x one start every ~0.2 s within the 1 s queue bound: five turns each (six for
        # a request arriving late enough that a sixth turn is within 1 s of it).
        assert 10 <= len(ok) <= 12
        for answer in refused:
            assert answer.json()["error"]["type"] == "rate_limited"
            assert answer.headers["retry-after"] in {"1", "2"}  # the next free slot, rounded up
        assert abs(served(fake)["k0"] - served(fake)["k1"]) <= 1


class TestCooldowns:
    def test_a_rate_limited_key_is_left_alone_until_its_reset(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {"mode": "rate_limited", "retry_after_s": 30}, "k1": {}})
        gateway = make_gateway({**provider_env("alpha", fake, ["k0", "k1"]), "ADMIN_TOKEN": TOKEN})
        for _ in range(6):
            answer = client.post(f"{gateway.base_url}/api/chat", json=HI)
            assert (answer.status_code, answer.json()["key_index"]) == (200, 1)
        assert served(fake) == {"k0": 1, "k1": 6}
        k0 = health(client, gateway)["providers"][0]["keys"][0]
        assert k0["state"] == "rate_limited"
        assert k0["cooldown_until"] is not None

    def test_a_reset_within_the_deadline_is_waited_for(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {"mode": "rate_limited", "retry_after_s": 0.5}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        first = client.post(f"{gateway.base_url}/api/chat", json=HI)
        assert first.status_code == 429
        fake.set_key("k0", mode="ok")
        second = client.post(f"{gateway.base_url}/api/chat", json=HI)
        assert second.status_code == 200  # waited for the reset instead of answering 429
        assert served(fake) == {"k0": 2}

    def test_a_reset_beyond_the_deadline_is_answered_at_once(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {"mode": "rate_limited", "retry_after_s": 20}})
        env = {**provider_env("alpha", fake, ["k0"]), "REQUEST_DEADLINE_S": "10"}
        gateway = make_gateway(env)
        client.post(f"{gateway.base_url}/api/chat", json=HI)
        answer = client.post(f"{gateway.base_url}/api/chat", json=HI)
        assert answer.status_code == 429
        assert 19 <= int(answer.headers["retry-after"]) <= 20
        assert served(fake) == {"k0": 1}


class TestLearnedLimits:
    def test_remaining_zero_pauses_the_key_until_the_announced_reset(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        # No RPM configured: the gateway only has the fake's x-ratelimit-* headers to go by.
        fake = make_fake({"k0": {"rps": 3}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        answers = [client.post(f"{gateway.base_url}/api/chat", json=HI) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert upstream_statuses(fake) == {"200": 5}


class TestStrategies:
    def test_weighted_selection_follows_configured_weights(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {}, "k1": {}, "k2": {}})
        env = provider_env("alpha", fake, ["k0", "k1", "k2"], key_weights="1,0,1")
        gateway = make_gateway({**env, "KEY_SELECTION": "weighted"})
        for _ in range(20):
            assert client.post(f"{gateway.base_url}/api/chat", json=HI).status_code == 200
        counts = served(fake)
        assert counts["k1"] == 0
        assert counts["k0"] + counts["k2"] == 20

    async def test_least_busy_sends_to_the_idle_key(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {}, "k1": {}})
        env = provider_env("alpha", fake, ["k0", "k1"])
        gateway = make_gateway({**env, "KEY_SELECTION": "least_busy", "ADMIN_TOKEN": TOKEN})
        fake.set_key("k0", latency_ms=600)
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.post(f"{gateway.base_url}/api/chat", json=HI))
            while fake.stats()["keys"]["k0"]["in_flight"] == 0:
                await asyncio.sleep(0.01)
            quick = [
                (await client.post(f"{gateway.base_url}/api/chat", json=HI)).json()["key_index"]
                for _ in range(4)
            ]
            assert (await slow).json()["key_index"] == 0
        assert quick == [1, 1, 1, 1]


class TestCircuitBreaker:
    def test_opens_skips_the_provider_then_half_opens_and_closes(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, fb = make_fake({"a0": {"mode": "error_500"}}), make_fake({"b0": {}})
        gateway = make_gateway(
            {
                **provider_env("alpha", fa, ["a0"]),
                **provider_env("beta", fb, ["b0"]),
                "LLM_PROVIDERS": "alpha,beta",
                "PROVIDER_ROTATION": "priority",
                "CIRCUIT_FAILURE_THRESHOLD": "2",
                "CIRCUIT_RESET_S": "1",
                "ADMIN_TOKEN": TOKEN,
            }
        )
        for _ in range(2):
            assert client.post(f"{gateway.base_url}/api/chat", json=HI).json()["provider"] == "beta"
        assert circuit(client, gateway, "alpha") == "open"
        answer = client.post(f"{gateway.base_url}/api/chat", json=HI)
        assert (answer.json()["provider"], answer.json()["attempts"]) == ("beta", [])
        assert served(fa) == {"a0": 2}  # skipped while open

        wait_for(lambda: circuit(client, gateway, "alpha") == "half_open", what="half-open")
        fa.set_key("a0", mode="ok")
        assert client.post(f"{gateway.base_url}/api/chat", json=HI).json()["provider"] == "alpha"
        assert circuit(client, gateway, "alpha") == "closed"
