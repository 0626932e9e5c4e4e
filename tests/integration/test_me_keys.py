"""PUT/DELETE /api/me/provider-keys/{provider}: a user stores their own key with their client key."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import FakeFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.vault import new_master_key, vault_gateway

ADMIN = f"admin-{secrets.token_hex(12)}"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
ENV_KEYS = ["sk-env-000000000000000001"]
OWN = "sk-own-aaaaaaaaaaaaaaaa0042"
BAD = "sk-own-revoked-00000000401"


def gateway(make_fake: FakeFactory, tmp_path: Path, **env: str) -> GatewayServer:
    fake = make_fake({ENV_KEYS[0]: {}, OWN: {}, BAD: {"mode": "unauthorized"}})
    base = {**provider_env("alpha", fake, ENV_KEYS), "ADMIN_TOKEN": ADMIN}
    return vault_gateway({**base, **env}, tmp_path / "gw")


def client_key(server: GatewayServer, user: str) -> str:
    created = httpx.post(
        f"{server.base_url}/api/admin/clients", json={"user_id": user}, headers=AUTH
    )
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def put(server: GatewayServer, key: str | None, secret: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = f"{server.base_url}/api/me/provider-keys/alpha"
    return httpx.put(url, json={"key": secret}, headers=headers, timeout=10)


def error(response: httpx.Response) -> tuple[int, Any]:
    return response.status_code, response.json()["error"]["type"]


def test_a_user_stores_and_removes_their_own_key(make_fake: FakeFactory, tmp_path: Path):
    server = gateway(make_fake, tmp_path, AUTH_MODE="token", KEYPOOL_MASTER_KEY=new_master_key())
    try:
        key = client_key(server, "alice")
        stored = put(server, key, OWN)
        assert stored.status_code == 200, stored.text
        entry = stored.json()
        assert (entry["user_id"], entry["source"], entry["fingerprint"]) == (
            "alice",
            "byok",
            "alpha:byok:0042",
        )
        assert OWN not in stored.text
        assert error(put(server, key, BAD)) == (422, "invalid_key")  # probed, not stored
        assert error(put(server, None, OWN)) == (401, "unauthorized")
        assert error(put(server, "kp-not-a-key", OWN)) == (401, "unauthorized")

        url = f"{server.base_url}/api/me/provider-keys/alpha"
        removed = httpx.delete(url, headers={"Authorization": f"Bearer {key}"})
        assert removed.status_code == 200, removed.text
        assert removed.json()["deleted"] is True
        again = httpx.delete(url, headers={"Authorization": f"Bearer {key}"})
        assert error(again) == (404, "unknown_key")
    finally:
        server.stop()


def test_vault_off_and_other_modes(make_fake: FakeFactory, tmp_path: Path):
    server = gateway(make_fake, tmp_path, AUTH_MODE="token")
    try:
        assert error(put(server, client_key(server, "bob"), OWN)) == (409, "vault_disabled")
    finally:
        server.stop()
    other = gateway(make_fake, tmp_path / "none", KEYPOOL_MASTER_KEY=new_master_key())
    try:
        assert error(put(other, None, OWN)) == (404, "not_found")
        assert error(put(other, ADMIN, OWN)) == (404, "not_found")
    finally:
        other.stop()
