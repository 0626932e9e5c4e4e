"""The admin API over real HTTP: bearer auth on every route, and the health view's contract."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.databases import DB_KINDS, stats_rows, throwaway_database
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for

TOKEN = "admin-0123456789-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"messages": [{"role": "user", "content": "hi"}]}
ROUTES = [
    ("GET", "/api/admin/api-keys/health"),
    ("POST", "/api/admin/api-keys/alpha/0/disable"),
    ("POST", "/api/admin/api-keys/alpha/0/enable"),
    ("POST", "/api/admin/api-keys/probe"),
    ("GET", "/api/admin/users/known-user"),
    ("POST", "/api/admin/users/rebalance"),
]
REFUSED = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "no token": {"Authorization": "Bearer"},
    "basic scheme": {"Authorization": f"Basic {TOKEN}"},
    "no scheme": {"Authorization": TOKEN},
    "token twice": {"Authorization": f"Bearer {TOKEN}{TOKEN}"},
}
ALPHA = {
    "sk-alpha-0000-aaaaaaaaaaaa": {},
    "sk-alpha-1111-bbbbbbbbbbbb": {},
    "sk-alpha-2222-cccccccccccc": {"mode": "rate_limited", "retry_after_s": 30.0},
    "sk-alpha-3333-dddddddddddd": {},
}
BETA = {"sk-beta-0000-eeeeeeeeeeee": {}, "sk-beta-1111-ffffffffffff": {"mode": "unauthorized"}}
SECRETS = [*ALPHA, *BETA, TOKEN]
ALPHA_RPM = 6000
DEFAULT_RPM = 30  # README "Choices": the figure used when a provider's RPM is unknown
Client = Callable[..., httpx.Client]


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def client() -> Iterator[Client]:
    opened: list[httpx.Client] = []

    def factory(gateway: GatewayServer) -> httpx.Client:
        opened.append(httpx.Client(base_url=gateway.base_url, timeout=10))
        return opened[-1]

    yield factory
    for c in opened:
        c.close()


def no_secret_in(answer: httpx.Response) -> None:
    seen = answer.text + repr(answer.headers.multi_items())
    assert [s for s in SECRETS if s in seen] == []


def assert_iso_utc(value: str) -> datetime:
    assert value.endswith("Z") or value.endswith("+00:00"), value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    return parsed


class TestAuth:
    def test_every_route_is_refused_without_a_configured_token(
        self, db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory, client: Client
    ):
        fake = make_fake({"k0": {}})
        api = client(make_gateway({**provider_env("alpha", fake, ["k0"]), "DATABASE_URL": db_url}))
        for method, path in ROUTES:
            for headers in ({}, AUTH):
                answer = api.request(method, path, headers=headers)
                assert answer.status_code == 403, (method, path)
                assert answer.json()["error"]["type"] == "admin_disabled"
                assert "ADMIN_TOKEN" in answer.json()["error"]["message"]
                no_secret_in(answer)

    def test_every_route_wants_the_exact_bearer_token(
        self, db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory, client: Client
    ):
        fake = make_fake({"k0": {}, "k1": {}})
        env = {**provider_env("alpha", fake, ["k0", "k1"]), "ADMIN_TOKEN": TOKEN}
        api = client(make_gateway({**env, "DATABASE_URL": db_url}))
        assert api.post("/api/chat", json=HI, headers={"X-User-Id": "known-user"}).is_success
        for method, path in ROUTES:
            for case, headers in REFUSED.items():
                answer = api.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path, case)
                assert answer.json()["error"]["type"] == "unauthorized"
                assert answer.headers["www-authenticate"] == "Bearer"
                assert "not-the-token" not in answer.text
                no_secret_in(answer)
            for headers in (AUTH, {"Authorization": f"bearer {TOKEN}"}):
                answer = api.request(method, path, headers=headers)
                assert answer.status_code == 200, (method, path, answer.text)
                no_secret_in(answer)
        # Only the one chat reached the provider's chat endpoint (the probe uses /v1/models).
        assert sum(k["requests"] for k in fake.stats()["keys"].values()) == 1


def health_of(api: httpx.Client) -> dict[str, Any]:
    answer = api.get("/api/admin/api-keys/health", headers=AUTH)
    assert answer.status_code == 200, answer.text
    no_secret_in(answer)
    body: dict[str, Any] = answer.json()
    return body


class TestHealthView:
    def start(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, db_url: str
    ) -> tuple[FakeProviderThread, FakeProviderThread, GatewayServer]:
        alpha, beta = make_fake(ALPHA), make_fake(BETA)
        env = provider_env("alpha", alpha, list(ALPHA), RPM_PER_KEY=str(ALPHA_RPM))
        env |= provider_env("beta", beta, list(BETA))  # no RPM: the default figure
        env |= {"ADMIN_TOKEN": TOKEN, "DATABASE_URL": db_url, "STATS_FLUSH_INTERVAL_S": "0.05"}
        return alpha, beta, make_gateway(env)

    def test_the_health_view_has_the_documented_shape_and_figures(
        self, db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory, client: Client
    ):
        alpha, beta, gateway = self.start(make_fake, make_gateway, db_url)
        api = client(gateway)
        started = time.time()
        # Groups fill least-loaded: u1 → 1, u2 → 2 (beta key 1: 401), u3 → 3 (alpha key 2: 429).
        for user, model in [("u1", None), ("u2", "beta/fake-small"), ("u3", "alpha/fake-small")]:
            body = HI | ({"model": model} if model else {})
            assert api.post("/api/chat", json=body, headers={"X-User-Id": user}).is_success
        assert api.post("/api/chat", json=HI).is_success  # no user: not in any group
        attempts = sum(c["requests"] for f in (alpha, beta) for c in f.stats()["keys"].values())
        wait_for(lambda: sum(r["total_requests"] for r in stats_rows(db_url)) == attempts)

        report = health_of(api)
        assert set(report) == {"ok", "health", "keyGroupStats", "providers"}
        assert report["ok"] is True
        self.check_health(report["health"])
        self.check_groups(report["keyGroupStats"], db_url)
        self.check_providers(report["providers"], {"alpha": alpha, "beta": beta}, started)

    def check_health(self, health: dict[str, Any]) -> None:
        assert set(health) == {
            "healthy", "totalKeys", "activeKeys", "status", "message", "estimatedCapacity"
        }  # fmt: skip
        assert (health["totalKeys"], health["activeKeys"]) == (6, 4)  # one cooling, one failed
        assert (health["status"], health["healthy"]) == ("DEGRADED", True)
        assert isinstance(health["message"], str)
        assert "4/6" in health["message"]
        per_minute = 3 * ALPHA_RPM + 1 * DEFAULT_RPM  # usable keys x RPM per key
        assert health["estimatedCapacity"] == {
            "requestsPerDay": per_minute * 60 * 24,
            "concurrentUsers": per_minute // 2,
            "dailyUsers": per_minute * 60 * 24 // 20,
        }

    def check_groups(self, groups: list[dict[str, Any]], db_url: str) -> None:
        fields = {"key_group", "user_count", "total_requests", "total_tokens", "last_request_at"}
        assert [set(g) for g in groups] == [fields] * 4  # G = 4, the most keys of a provider
        assert [g["key_group"] for g in groups] == [1, 2, 3, 4]
        assert [g["user_count"] for g in groups] == [1, 1, 1, 0]
        rows = stats_rows(db_url)
        for group in groups:
            mine = [r for r in rows if r["key_group"] == group["key_group"]]
            assert group["total_requests"] == sum(r["total_requests"] for r in mine)
            assert group["total_tokens"] == sum(r["total_tokens"] for r in mine)
            assert all(type(group[f]) is int for f in fields - {"last_request_at"})
        assert [g["total_requests"] for g in groups] == [1, 2, 2, 0]  # failed tries count too
        assert groups[3]["last_request_at"] is None
        for group in groups[:3]:
            assert_iso_utc(group["last_request_at"])

    def check_providers(
        self, providers: list[dict[str, Any]], fakes: dict[str, FakeProviderThread], since: float
    ) -> None:
        assert [(p["name"], p["default_model"], p["circuit"]) for p in providers] == [
            ("alpha", "fake-small", "closed"),
            ("beta", "fake-small", "closed"),
        ]
        fields = {"key_index", "fingerprint", "state", "cooldown_until", "requests", "errors"}
        fields.add("limits")  # scheduling: configured or learned per-key limits
        for provider in providers:
            assert provider["shared_limit_until"] is None
            counters = list(fakes[provider["name"]].stats()["keys"].values())
            for index, key in enumerate(provider["keys"]):
                assert set(key) - {"in_flight", "source"} == fields  # additive extras
                assert key["source"] == "env"  # no vault: every key is an environment key
                assert key["key_index"] == index
                assert key["fingerprint"].startswith(f"{provider['name']}:{index}:")
                assert key["requests"] == counters[index]["requests"]
                assert key["errors"] == counters[index]["requests"] - counters[index]["ok"]
        states = {(p["name"], k["key_index"]): k["state"] for p in providers for k in p["keys"]}
        assert states == {
            ("alpha", 0): "active",
            ("alpha", 1): "active",
            ("alpha", 2): "rate_limited",
            ("alpha", 3): "active",
            ("beta", 0): "active",
            ("beta", 1): "failed",
        }
        cooling = providers[0]["keys"][2]["cooldown_until"]
        assert since + 25 < assert_iso_utc(cooling).timestamp() < time.time() + 31  # Retry-After
        cooldowns = [k["cooldown_until"] for p in providers for k in p["keys"]]
        assert cooldowns.count(None) == 5


THRESHOLD_STEPS = [
    # (keys disabled, keys failed by 401) → (activeKeys, status)
    ([], False, 10, "EXCELLENT"),
    ([0], False, 9, "EXCELLENT"),
    ([], True, 8, "GOOD"),
    ([0], True, 7, "GOOD"),
    ([0, 1], True, 6, "DEGRADED"),
    ([0, 1, 2, 3], True, 4, "DEGRADED"),
    ([0, 1, 2, 3, 4], True, 3, "CRITICAL"),
]


def test_status_follows_the_share_of_usable_keys(
    db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory, client: Client
):
    keys: dict[str, dict[str, str]] = {f"sk-ten-{i}-000000000000": {} for i in range(10)}
    for key in list(keys)[8:]:
        keys[key] = {"mode": "unauthorized"}
    fake = make_fake(keys)
    env = provider_env("alpha", fake, list(keys), RPM_PER_KEY=str(ALPHA_RPM))
    api = client(make_gateway({**env, "ADMIN_TOKEN": TOKEN, "DATABASE_URL": db_url}))
    disabled: set[int] = set()
    for off, failed, active, status in THRESHOLD_STEPS:
        if failed and fake.stats()["keys"][list(keys)[9]]["requests"] == 0:
            for _ in range(12):  # round robin reaches keys 8 and 9; each 401 marks one failed
                assert api.post("/api/chat", json=HI).status_code == 200
        for index in disabled - set(off):
            assert api.post(f"/api/admin/api-keys/alpha/{index}/enable", headers=AUTH).is_success
        for index in set(off) - disabled:
            assert api.post(f"/api/admin/api-keys/alpha/{index}/disable", headers=AUTH).is_success
        disabled = set(off)

        health = health_of(api)["health"]
        assert (health["totalKeys"], health["activeKeys"], health["status"]) == (10, active, status)
        assert health["healthy"] is (status != "CRITICAL")
        assert f"{active}/10" in health["message"]
        assert health["estimatedCapacity"]["requestsPerDay"] == active * ALPHA_RPM * 60 * 24
