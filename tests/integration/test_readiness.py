"""/readyz reports the database, and chat rides out a database outage with no stats lost."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.db.migrate import upgrade
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.databases import (
    DB_KINDS,
    pg_address,
    run_in_thread,
    stats_rows,
    throwaway_database,
    user_groups,
)
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for
from tests.support.tcp_switch import TcpSwitch
from tests.support.usage import expected_rows, settled_stats

TOKEN = "readiness-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"messages": [{"role": "user", "content": "hi"}]}
READY = {"status": "ready", "checks": {"database": "ok", "redis": "off"}}
DEGRADED = {"status": "degraded", "checks": {"database": "down", "redis": "off"}}


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def readyz(client: httpx.Client, gateway: GatewayServer) -> tuple[int, Any]:
    answer = client.get(f"{gateway.base_url}/readyz")
    return answer.status_code, answer.json()


def start(make_fake: FakeFactory, make_gateway: GatewayFactory, url: str) -> GatewayServer:
    fake = make_fake({"k0": {}, "k1": {}})
    env = provider_env("alpha", fake, ["k0", "k1"])
    return make_gateway(
        {**env, "DATABASE_URL": url, "ADMIN_TOKEN": TOKEN, "STATS_FLUSH_INTERVAL_S": "0.05"}
    )


class Traffic:
    """Chats sent through a gateway, remembered with the group they were made for."""

    def __init__(self, gateway: GatewayServer, client: httpx.Client) -> None:
        self.gateway = gateway
        self.client = client
        self.sent: list[tuple[str | None, dict[str, Any]]] = []

    def chat(self, user: str | None, n: int = 1) -> None:
        headers = {"X-User-Id": user} if user else {}
        for _ in range(n):
            answer = self.client.post(f"{self.gateway.base_url}/api/chat", json=HI, headers=headers)
            assert answer.status_code == 200, answer.text
            self.sent.append((user, answer.json()))

    def group_of(self, user: str) -> int:
        answer = self.client.get(f"{self.gateway.base_url}/api/admin/users/{user}", headers=AUTH)
        assert answer.status_code == 200, answer.text
        group: int = answer.json()["api_key_group"]
        return group

    def expected(self) -> dict[Any, Any]:
        groups = {u: self.group_of(u) for u in {u for u, _ in self.sent if u}}
        return expected_rows((groups[u] if u else None, body) for u, body in self.sent)


def test_ready_when_the_database_answers(
    db_url: str, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
):
    gateway = start(make_fake, make_gateway, db_url)
    assert readyz(client, gateway) == (200, READY)
    assert client.get(f"{gateway.base_url}/healthz").json() == {"status": "ok"}


def test_postgres_outage_serves_chat_and_writes_the_stats_once_it_is_back(
    make_fake: FakeFactory, make_gateway: GatewayFactory, tmp_path: Path, client: httpx.Client
):
    with (
        throwaway_database("postgres", tmp_path, migrated=True) as direct_url,
        TcpSwitch(*pg_address()) as switch,
    ):
        via_switch = make_url(direct_url).set(host="127.0.0.1", port=switch.port)
        gateway = start(make_fake, make_gateway, via_switch.render_as_string(hide_password=False))
        traffic = Traffic(gateway, client)
        traffic.chat("before", 3)
        traffic.chat(None, 2)
        wait_for(lambda: sum(r["total_requests"] for r in stats_rows(direct_url)) == 5)

        switch.off()
        traffic.chat("before", 4)
        traffic.chat("during", 5)  # first seen while the database is down
        traffic.chat(None, 6)
        assert readyz(client, gateway) == (200, DEGRADED)
        health = client.get(f"{gateway.base_url}/api/admin/api-keys/health", headers=AUTH)
        assert health.status_code == 200
        assert health.json()["health"]["activeKeys"] == 2
        during_group = traffic.group_of("during")  # known from memory meanwhile
        rebalance = client.post(f"{gateway.base_url}/api/admin/users/rebalance", headers=AUTH)
        assert rebalance.status_code == 503
        assert rebalance.json()["error"]["type"] == "database_unavailable"
        assert sum(r["total_requests"] for r in stats_rows(direct_url)) == 5
        assert "during" not in user_groups(direct_url)

        switch.on()
        wait_for(lambda: readyz(client, gateway) == (200, READY), what="ready again")
        wait_for(lambda: "during" in user_groups(direct_url), what="user saved")
        expected = traffic.expected()
        settled_stats(direct_url, expected)
        assert user_groups(direct_url)["during"] == during_group
        gateway.stop()  # while its database still exists


def test_sqlite_that_appears_later_gets_every_stat(
    make_fake: FakeFactory, make_gateway: GatewayFactory, tmp_path: Path, client: httpx.Client
):
    later = tmp_path / "later"
    url = f"sqlite+aiosqlite:///{later / 'keypool.db'}"
    gateway = start(make_fake, make_gateway, url)  # its directory does not exist yet
    traffic = Traffic(gateway, client)
    traffic.chat("early", 3)
    traffic.chat(None, 2)
    assert readyz(client, gateway) == (200, DEGRADED)

    later.mkdir()
    run_in_thread(upgrade, url)  # an operator runs `keypool db upgrade`
    wait_for(lambda: readyz(client, gateway) == (200, READY), what="ready")
    expected = traffic.expected()
    settled_stats(url, expected)
    wait_for(lambda: set(user_groups(url)) == {"early"}, what="user saved")


def test_an_unopenable_sqlite_path_still_serves_and_shuts_down_cleanly(
    make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
):
    """Shutting down flushes into a database that cannot be opened: aiosqlite's worker
    thread must not outlive the gateway's event loop (pytest fails on its exception)."""
    gateway = start(make_fake, make_gateway, "sqlite+aiosqlite:////nonexistent-dir/x.db")
    Traffic(gateway, client).chat("someone", 2)
    assert readyz(client, gateway) == (200, DEGRADED)
    gateway.stop()
