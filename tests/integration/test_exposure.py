"""What anyone on the network can reach: /metrics, the docs, user ids, stored users."""

from __future__ import annotations

import http.client

import httpx
import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for

METRICS_TOKEN = "metrics-token-for-exposure-tests"
ADMIN = "admin-token-for-exposure-tests"
HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def env(make_fake: FakeFactory) -> dict[str, str]:
    fake = make_fake({"k0": {}})
    return {**provider_env("alpha", fake, ["k0"]), "ADMIN_TOKEN": ADMIN}


class TestMetricsToken:
    def test_metrics_need_the_token_when_one_is_set(
        self, env: dict[str, str], make_gateway: GatewayFactory
    ) -> None:
        gateway = make_gateway({**env, "METRICS_TOKEN": METRICS_TOKEN})
        url = f"{gateway.base_url}/metrics"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = httpx.get(url, headers=headers)
            assert answer.status_code == 401
            assert answer.json()["error"]["type"] == "unauthorized"
        ok = httpx.get(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        assert "keypool_upstream_attempts" in ok.text

    def test_metrics_are_open_without_a_token(
        self, env: dict[str, str], make_gateway: GatewayFactory
    ) -> None:
        assert httpx.get(f"{make_gateway(env).base_url}/metrics").status_code == 200


class TestDocs:
    @pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
    def test_docs_are_off_by_default(
        self, env: dict[str, str], make_gateway: GatewayFactory, path: str
    ) -> None:
        answer = httpx.get(f"{make_gateway(env).base_url}{path}")
        assert answer.status_code == 404
        assert answer.json()["error"]["type"] == "not_found"

    def test_docs_enabled_serves_them(
        self, env: dict[str, str], make_gateway: GatewayFactory
    ) -> None:
        gateway = make_gateway({**env, "DOCS_ENABLED": "true"})
        assert httpx.get(f"{gateway.base_url}/openapi.json").status_code == 200
        assert httpx.get(f"{gateway.base_url}/docs").status_code == 200


def test_an_upstream_400_is_not_counted_as_ok(
    make_fake: FakeFactory, make_gateway: GatewayFactory
) -> None:
    fake = make_fake({"k0": {"mode": "bad_request"}})
    gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
    assert httpx.post(f"{gateway.base_url}/api/chat", json=HI).status_code == 400
    text = httpx.get(f"{gateway.base_url}/metrics").text
    key = gateway.settings.providers[0].keys[0].fingerprint
    assert (
        f'keypool_upstream_attempts_total{{key="{key}",provider="alpha",result="rejected"}} 1.0'
        in (text)
    )
    assert 'result="ok"' not in text


def test_an_x_user_id_that_is_not_utf8_is_a_422(
    env: dict[str, str], make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(env)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/chat")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("X-User-Id", b"\xff\xfe-bad")
        body = b'{"messages":[{"role":"user","content":"hi"}]}'
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        assert answer.status == 422
        assert b"invalid_request" in answer.read()
    finally:
        conn.close()


def test_made_up_user_ids_beyond_the_per_minute_cap_create_no_rows(
    env: dict[str, str], make_gateway: GatewayFactory
) -> None:
    gateway: GatewayServer = make_gateway({**env, "NEW_USERS_PER_MINUTE": "3"})
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        for i in range(6):
            answer = client.post("/api/chat", json=HI, headers={"X-User-Id": f"u{i}"})
            assert answer.status_code == 200  # everyone is served

        def stored(user: str) -> int:
            return client.get(f"/api/admin/users/{user}", headers=auth).status_code

        wait_for(lambda: stored("u2") == 200 or None, what="the first users saved")
        assert [stored(f"u{i}") for i in range(6)] == [200] * 3 + [404] * 3
