"""Admin key operations over real HTTP: disable/enable, probe now, and recovery of failed keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for

TOKEN = "admin-token-for-key-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"messages": [{"role": "user", "content": "hi"}]}
SECRETS = ["sk-alpha-ok-0000000000001", "sk-alpha-dead-00000000002", "sk-alpha-down-00000000003"]


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def gateway_for(
    make_fake: FakeFactory,
    make_gateway: GatewayFactory,
    keys: dict[str, dict[str, Any]],
    **env: str,
) -> tuple[FakeProviderThread, GatewayServer]:
    fake = make_fake(keys)
    gateway = make_gateway({**provider_env("alpha", fake, list(keys)), "ADMIN_TOKEN": TOKEN, **env})
    return fake, gateway


def keys_of(client: httpx.Client, gateway: GatewayServer) -> list[dict[str, Any]]:
    health = client.get(f"{gateway.base_url}/api/admin/api-keys/health", headers=AUTH)
    assert health.status_code == 200
    entries: list[dict[str, Any]] = health.json()["providers"][0]["keys"]
    return entries


def served(fake: FakeProviderThread) -> dict[str, int]:
    return {key: c["requests"] for key, c in fake.stats()["keys"].items()}


def chat_n(client: httpx.Client, gateway: GatewayServer, n: int) -> list[int]:
    keys = []
    for _ in range(n):
        answer = client.post(f"{gateway.base_url}/api/chat", json=HI)
        assert answer.status_code == 200, answer.text
        keys.append(answer.json()["key_index"])
    return keys


class TestDisableEnable:
    def test_a_disabled_key_gets_no_traffic_until_enabled(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = gateway_for(make_fake, make_gateway, {"k0": {}, "k1": {}, "k2": {}})
        off = client.post(f"{gateway.base_url}/api/admin/api-keys/alpha/1/disable", headers=AUTH)
        assert off.status_code == 200
        entry = off.json()
        assert (entry["key_index"], entry["state"], entry["cooldown_until"]) == (
            1,
            "disabled",
            None,
        )
        assert entry["fingerprint"].startswith("alpha:1:")
        assert set(entry) >= {"requests", "errors"}

        assert 1 not in chat_n(client, gateway, 6)
        assert served(fake) == {"k0": 3, "k1": 0, "k2": 3}
        assert keys_of(client, gateway)[1]["state"] == "disabled"

        on = client.post(f"{gateway.base_url}/api/admin/api-keys/ALPHA/1/enable", headers=AUTH)
        assert (on.status_code, on.json()["state"]) == (200, "active")
        assert 1 in chat_n(client, gateway, 3)
        assert served(fake)["k1"] == 1

    @pytest.mark.parametrize("path", ["beta/0/disable", "alpha/3/disable", "alpha/-1/enable"])
    def test_an_unknown_key_is_404(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        client: httpx.Client,
        path: str,
    ):
        _, gateway = gateway_for(make_fake, make_gateway, {"k0": {}, "k1": {}, "k2": {}})
        answer = client.post(f"{gateway.base_url}/api/admin/api-keys/{path}", headers=AUTH)
        assert answer.status_code == 404
        assert answer.json()["error"]["type"] == "unknown_key"

    def test_admin_operations_need_the_token(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = gateway_for(make_fake, make_gateway, {"k0": {}})
        url = f"{gateway.base_url}/api/admin/api-keys"
        wrong = {"Authorization": "Bearer nope"}
        for answer in (
            client.post(f"{url}/alpha/0/disable", headers=wrong),
            client.post(f"{url}/probe"),
        ):
            assert answer.status_code == 401
            assert answer.json()["error"]["type"] == "unauthorized"
        assert keys_of(client, gateway)[0]["state"] == "active"
        assert fake.stats()["total_models_requests"] == 0

    def test_without_an_admin_token_configured_the_routes_are_off(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        answer = client.post(f"{gateway.base_url}/api/admin/api-keys/alpha/0/disable", headers=AUTH)
        assert answer.status_code == 403
        assert answer.json()["error"]["type"] == "admin_disabled"


class TestProbe:
    def test_probe_reports_every_key_and_never_counts_as_traffic(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        behaviours = [{}, {"mode": "unauthorized"}, {"mode": "error_500"}]
        fake, gateway = gateway_for(
            make_fake, make_gateway, dict(zip(SECRETS, behaviours, strict=True))
        )
        answer = client.post(f"{gateway.base_url}/api/admin/api-keys/probe", headers=AUTH)
        assert answer.status_code == 200
        results = answer.json()["results"]
        summary = [(r["key_index"], r["ok"], r["status"], r["state"]) for r in results]
        assert summary == [
            (0, True, 200, "active"),
            (1, False, 401, "failed"),
            (2, False, 500, "active"),
        ]
        for result in results:
            assert result["provider"] == "alpha"
            assert result["fingerprint"].startswith(f"alpha:{result['key_index']}:")
            assert result["latency_ms"] >= 0
        assert not any(secret in answer.text for secret in SECRETS)
        assert fake.stats()["total_models_requests"] == 3
        assert served(fake) == dict.fromkeys(SECRETS, 0)
        assert [(k["requests"], k["errors"]) for k in keys_of(client, gateway)] == [(0, 0)] * 3


class TestRecovery:
    def fail_k0(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client, **env: str
    ) -> tuple[FakeProviderThread, GatewayServer]:
        fake, gateway = gateway_for(
            make_fake, make_gateway, {"k0": {"mode": "error_500"}, "k1": {}}, **env
        )
        assert chat_n(client, gateway, 6) == [1] * 6  # k0 answered 500 each time it was tried
        assert keys_of(client, gateway)[0]["state"] == "failed"
        return fake, gateway

    def test_a_probe_brings_a_key_back_once_it_works(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = self.fail_k0(make_fake, make_gateway, client)
        probe = client.post(f"{gateway.base_url}/api/admin/api-keys/probe", headers=AUTH)
        assert probe.json()["results"][0]["state"] == "failed"  # still broken: stays failed
        fake.set_key("k0", mode="ok")
        probe = client.post(f"{gateway.base_url}/api/admin/api-keys/probe", headers=AUTH)
        assert probe.json()["results"][0] | {"latency_ms": 0} == {
            "provider": "alpha",
            "key_index": 0,
            "fingerprint": keys_of(client, gateway)[0]["fingerprint"],
            "ok": True,
            "status": 200,
            "latency_ms": 0,
            "state": "active",
        }
        assert 0 in chat_n(client, gateway, 2)

    def test_the_background_prober_revives_it_by_itself(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = self.fail_k0(make_fake, make_gateway, client, PROBE_INTERVAL_S="0.5")
        before = keys_of(client, gateway)[0]
        fake.set_key("k0", mode="ok")
        wait_for(lambda: keys_of(client, gateway)[0]["state"] == "active", what="k0 active again")
        after = keys_of(client, gateway)[0]
        assert (after["requests"], after["errors"]) == (before["requests"], before["errors"])
        assert fake.stats()["keys"]["k0"]["models_requests"] >= 1
