"""The vault admin routes over real HTTP, with a real database and the fake provider probing keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import FakeFactory
from tests.support.databases import DB_KINDS, closed_port, run_coro, throwaway_database
from tests.support.servers import GatewayServer, provider_env
from tests.support.vault import new_master_key, vault_gateway

TOKEN = "admin-token-for-vault-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV_KEYS = ["sk-env-000000000000000001", "sk-env-000000000000000002"]
NEW = ["sk-run-aaaaaaaaaaaaaaaa0011", "sk-run-bbbbbbbbbbbbbbbb0012", "sk-run-cccccccccccccccc0013"]
BUSY = "sk-run-busy-00000000000429"
BROKEN = "sk-run-down-00000000000500"
ENTRY_FIELDS = {"key_index", "fingerprint", "state", "cooldown_until", "requests", "errors"}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(params=DB_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def gateway(make_fake: FakeFactory, database: str, tmp_path: Path) -> Iterator[GatewayServer]:
    keys: dict[str, dict[str, Any]] = {k: {} for k in [*ENV_KEYS, *NEW]}
    keys[BUSY] = {"mode": "rate_limited", "retry_after_s": 30}
    keys[BROKEN] = {"mode": "error_500"}
    fake = make_fake(keys)
    env = {
        **provider_env("alpha", fake, ENV_KEYS),
        "ADMIN_TOKEN": TOKEN,
        "DATABASE_URL": database,
        "KEYPOOL_MASTER_KEY": new_master_key(),
    }
    server = vault_gateway(env, tmp_path / "gw")
    yield server
    server.stop()


def add(client: httpx.Client, gateway: GatewayServer, key: str, **extra: Any) -> httpx.Response:
    body = {"key": key, **extra}
    return client.post(f"{gateway.base_url}/api/admin/api-keys/alpha", json=body, headers=AUTH)


def delete(client: httpx.Client, gateway: GatewayServer, index: int | str) -> httpx.Response:
    return client.delete(f"{gateway.base_url}/api/admin/api-keys/alpha/{index}", headers=AUTH)


def error_type(response: httpx.Response) -> str:
    kind: str = response.json()["error"]["type"]
    return kind


class TestAddKey:
    def test_a_valid_key_is_stored_and_listed_after_the_environment_keys(
        self, client: httpx.Client, gateway: GatewayServer, database: str
    ):
        first, second = add(client, gateway, NEW[0]), add(client, gateway, NEW[1])
        assert (first.status_code, second.status_code) == (201, 201)
        entry = first.json()
        assert set(entry) >= ENTRY_FIELDS | {"source", "id"}
        assert (entry["key_index"], entry["fingerprint"], entry["source"]) == (
            2,
            "alpha:2:0011",
            "vault",
        )
        assert (entry["state"], entry["requests"], entry["errors"]) == ("active", 0, 0)
        assert second.json()["key_index"] == 3
        assert second.json()["id"] > entry["id"]
        for answer in (first, second):
            assert NEW[0] not in answer.text
            assert NEW[1] not in answer.text
        assert stored_text(database).count("alpha") == 2
        assert NEW[0] not in stored_text(database)

    def test_a_rate_limited_key_counts_as_valid(self, client: httpx.Client, gateway: GatewayServer):
        assert add(client, gateway, BUSY).status_code == 201

    def test_a_key_the_provider_refuses_is_422_and_not_stored(
        self, client: httpx.Client, gateway: GatewayServer, database: str
    ):
        refused = add(client, gateway, "sk-unknown-to-the-provider-99")
        assert (refused.status_code, error_type(refused)) == (422, "invalid_key")
        assert "sk-unknown-to-the-provider-99" not in refused.text
        assert stored_text(database) == ""

    def test_a_key_that_cannot_be_checked_is_not_stored_unless_told_not_to_check(
        self, client: httpx.Client, gateway: GatewayServer, database: str
    ):
        failed = add(client, gateway, BROKEN)
        assert (failed.status_code, error_type(failed)) == (502, "upstream_unreachable")
        assert stored_text(database) == ""
        assert add(client, gateway, BROKEN, validate=False).status_code == 201

    def test_duplicates_of_environment_or_vault_keys_are_409(
        self, client: httpx.Client, gateway: GatewayServer
    ):
        assert add(client, gateway, NEW[0]).status_code == 201
        for key in (ENV_KEYS[1], NEW[0], f"  {NEW[0]} "):
            duplicate = add(client, gateway, key)
            assert (duplicate.status_code, error_type(duplicate)) == (409, "duplicate_key")

    def test_unknown_provider_blank_key_and_missing_token(
        self, client: httpx.Client, gateway: GatewayServer
    ):
        unknown = client.post(
            f"{gateway.base_url}/api/admin/api-keys/nope", json={"key": NEW[0]}, headers=AUTH
        )
        assert (unknown.status_code, error_type(unknown)) == (404, "unknown_key")
        blank = add(client, gateway, "   ")
        assert (blank.status_code, error_type(blank)) == (422, "invalid_request")
        anonymous = client.post(
            f"{gateway.base_url}/api/admin/api-keys/alpha", json={"key": NEW[0]}
        )
        assert (anonymous.status_code, error_type(anonymous)) == (401, "unauthorized")


class TestDeleteKey:
    def test_deleting_a_vault_key_moves_the_later_ones_down(
        self, client: httpx.Client, gateway: GatewayServer
    ):
        ids = [add(client, gateway, key).json()["id"] for key in NEW]
        removed = delete(client, gateway, 3)
        assert removed.status_code == 200
        assert (removed.json()["id"], removed.json()["source"]) == (ids[1], "vault")
        again = delete(client, gateway, 3)  # the third key moved from index 4 to 3
        assert (again.status_code, again.json()["id"]) == (200, ids[2])
        gone = delete(client, gateway, 3)
        assert (gone.status_code, error_type(gone)) == (404, "unknown_key")

    @pytest.mark.parametrize(
        ("index", "status", "kind"),
        [
            (0, 409, "key_from_environment"),
            (1, 409, "key_from_environment"),
            (2, 404, "unknown_key"),
            ("99999999999999999999", 404, "unknown_key"),
            (-1, 404, "unknown_key"),
        ],
    )
    def test_environment_and_unknown_indices(
        self, client: httpx.Client, gateway: GatewayServer, index: int | str, status: int, kind: str
    ):
        answer = delete(client, gateway, index)
        assert (answer.status_code, error_type(answer)) == (status, kind)


class TestBringYourOwnKey:
    def test_put_replace_and_delete_a_users_own_key(
        self, client: httpx.Client, gateway: GatewayServer, database: str
    ):
        url = f"{gateway.base_url}/api/admin/users/alice/provider-keys/alpha"
        put = client.put(url, json={"key": NEW[0]}, headers=AUTH)
        assert put.status_code == 200
        assert (put.json()["source"], put.json()["fingerprint"]) == ("byok", "alpha:byok:0011")
        assert NEW[0] not in put.text
        assert client.put(url, json={"key": NEW[1]}, headers=AUTH).status_code == 200
        assert stored_text(database) == "alpha,alice"  # one row: the second replaced the first
        refused = client.put(url, json={"key": "sk-unknown-to-the-provider-99"}, headers=AUTH)
        assert (refused.status_code, error_type(refused)) == (422, "invalid_key")
        shared = client.put(url, json={"key": ENV_KEYS[0]}, headers=AUTH)
        assert (shared.status_code, error_type(shared)) == (409, "duplicate_key")
        assert client.delete(url, headers=AUTH).status_code == 200
        missing = client.delete(url, headers=AUTH)
        assert (missing.status_code, error_type(missing)) == (404, "unknown_key")
        assert stored_text(database) == ""


class TestVaultOff:
    def test_without_a_master_key_the_routes_answer_vault_disabled(
        self, make_fake: FakeFactory, client: httpx.Client, tmp_path: Path
    ):
        fake = make_fake({k: {} for k in ENV_KEYS})
        env = {**provider_env("alpha", fake, ENV_KEYS), "ADMIN_TOKEN": TOKEN}
        gateway = vault_gateway(env, tmp_path / "off")
        try:
            added = add(client, gateway, NEW[0])
            assert (added.status_code, error_type(added)) == (409, "vault_disabled")
            byok = client.put(
                f"{gateway.base_url}/api/admin/users/alice/provider-keys/alpha",
                json={"key": NEW[0]},
                headers=AUTH,
            )
            assert (byok.status_code, error_type(byok)) == (409, "vault_disabled")
            env_key = delete(client, gateway, 0)
            assert (env_key.status_code, error_type(env_key)) == (409, "key_from_environment")
        finally:
            gateway.stop()


def stored_text(url: str) -> str:
    """Every row of provider_keys as text (provider,user per row), to show what is stored."""
    from app.db.session import create_engine

    async def read() -> str:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(text("SELECT * FROM provider_keys ORDER BY id"))).all()
        finally:
            await engine.dispose()
        for row in rows:
            raw = b"".join(bytes(v) for v in row if isinstance(v, bytes | memoryview))
            assert not any(s.encode() in raw or s in repr(row) for s in [*NEW, BUSY, BROKEN])
        return ";".join(f"{r.provider},{r.user_id or ''}".rstrip(",") for r in rows)

    return run_coro(read())


class TestDatabaseDown:
    def test_a_write_with_the_database_down_is_503_and_chat_keeps_working(
        self, make_fake: FakeFactory, client: httpx.Client, tmp_path: Path
    ):
        fake = make_fake({k: {} for k in [*ENV_KEYS, NEW[0]]})
        env = {
            **provider_env("alpha", fake, ENV_KEYS),
            "ADMIN_TOKEN": TOKEN,
            "KEYPOOL_MASTER_KEY": new_master_key(),
            "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere",
        }
        gateway = vault_gateway(env, tmp_path / "down")
        try:
            added = add(client, gateway, NEW[0])
            assert (added.status_code, error_type(added)) == (503, "database_unavailable")
            chat = client.post(
                f"{gateway.base_url}/api/chat",
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.status_code == 200
        finally:
            gateway.stop()
