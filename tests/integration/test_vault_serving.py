"""Vault keys and users' own keys in the live gateway, over real HTTP, a real database and Redis.

The fake provider counts requests per key, so each test sees which key an upstream call used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from app.vault.rotation import rotate_master_with_url
from tests.conftest import FakeFactory
from tests.support.databases import DB_KINDS, run_coro, stats_rows, throwaway_database
from tests.support.redis_server import SHARED_URL, shared_prefix
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for
from tests.support.vault import new_master_key, vault_gateway

TOKEN = "admin-token-for-vault-serving"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV_KEY = "sk-env-serving-0000000000001"
VAULT = ["sk-run-serving-aaaaaaaa0021", "sk-run-serving-bbbbbbbb0022"]
OWN = "sk-own-alice-cccccccccccc0031"
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
NAMED = {**HELLO, "model": "fake-small"}  # Path B: errors are named per key


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


@pytest.fixture(params=DB_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=["memory", "redis"])
def state_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Key state in process, or shared through Redis (a namespace of its own)."""
    if request.param == "memory":
        yield {}
        return
    with shared_prefix() as prefix:
        yield {"REDIS_URL": SHARED_URL, "KEYPOOL_REDIS_PREFIX": prefix}


@pytest.fixture
def fake(make_fake: FakeFactory) -> FakeProviderThread:
    return make_fake({k: {} for k in [ENV_KEY, *VAULT, OWN]})


def base_env(fake: FakeProviderThread, database: str, master: str) -> dict[str, str]:
    return {
        **provider_env("alpha", fake, [ENV_KEY]),
        "ADMIN_TOKEN": TOKEN,
        "DATABASE_URL": database,
        "KEYPOOL_MASTER_KEY": master,
    }


def requests_of(fake: FakeProviderThread, key: str) -> int:
    counters = fake.stats()["keys"].get(key)
    return int(counters["requests"]) if counters else 0


def chat(
    client: httpx.Client,
    gateway: GatewayServer,
    user: str | None = None,
    body: dict[str, Any] = HELLO,
) -> httpx.Response:
    headers = {"X-User-Id": user} if user else {}
    return client.post(f"{gateway.base_url}/api/chat", json=body, headers=headers)


def add(client: httpx.Client, gateway: GatewayServer, key: str) -> dict[str, Any]:
    answer = client.post(
        f"{gateway.base_url}/api/admin/api-keys/alpha", json={"key": key}, headers=AUTH
    )
    assert answer.status_code == 201, answer.text
    entry: dict[str, Any] = answer.json()
    return entry


def health_keys(client: httpx.Client, gateway: GatewayServer) -> list[dict[str, Any]]:
    answer = client.get(f"{gateway.base_url}/api/admin/api-keys/health", headers=AUTH)
    assert answer.status_code == 200, answer.text
    keys: list[dict[str, Any]] = answer.json()["providers"][0]["keys"]
    return keys


def own_key(client: httpx.Client, gateway: GatewayServer, user: str, key: str) -> httpx.Response:
    url = f"{gateway.base_url}/api/admin/users/{user}/provider-keys/alpha"
    return client.put(url, json={"key": key}, headers=AUTH)


class TestRunTimeKeys:
    def test_an_added_key_serves_at_once_and_a_deleted_one_no_longer(
        self,
        client: httpx.Client,
        fake: FakeProviderThread,
        database: str,
        state_env: dict[str, str],
        tmp_path: Path,
    ):
        gateway = vault_gateway(
            {**base_env(fake, database, new_master_key()), **state_env}, tmp_path
        )
        try:
            entry = add(client, gateway, VAULT[0])
            assert (entry["key_index"], entry["source"]) == (1, "vault")
            answers = [chat(client, gateway) for _ in range(6)]
            assert [a.status_code for a in answers] == [200] * 6
            assert {a.json()["key_index"] for a in answers} == {0, 1}
            assert requests_of(fake, VAULT[0]) == 3  # round robin over both keys
            listed = health_keys(client, gateway)
            assert [(k["source"], k.get("id")) for k in listed] == [
                ("env", None),
                ("vault", entry["id"]),
            ]
            assert listed[1]["requests"] == 3

            deleted = client.delete(f"{gateway.base_url}/api/admin/api-keys/alpha/1", headers=AUTH)
            assert (deleted.status_code, deleted.json()["id"]) == (200, entry["id"])
            before = requests_of(fake, VAULT[0])
            assert all(chat(client, gateway).json()["key_index"] == 0 for _ in range(4))
            assert requests_of(fake, VAULT[0]) == before
            assert [k["source"] for k in health_keys(client, gateway)] == ["env"]
        finally:
            gateway.stop()

    def test_deleting_an_earlier_vault_key_keeps_a_later_keys_cooldown_with_it(
        self,
        client: httpx.Client,
        fake: FakeProviderThread,
        database: str,
        state_env: dict[str, str],
        tmp_path: Path,
    ):
        gateway = vault_gateway(
            {**base_env(fake, database, new_master_key()), **state_env}, tmp_path
        )
        try:
            first, second = add(client, gateway, VAULT[0]), add(client, gateway, VAULT[1])
            fake.set_key(VAULT[1], mode="rate_limited", retry_after_s=120)
            for _ in range(3):  # one round over the three keys: the last one answers 429
                assert chat(client, gateway).status_code == 200
            cooling = health_keys(client, gateway)[2]
            assert (cooling["id"], cooling["state"]) == (second["id"], "rate_limited")

            removed = client.delete(f"{gateway.base_url}/api/admin/api-keys/alpha/1", headers=AUTH)
            assert (removed.status_code, removed.json()["id"]) == (200, first["id"])
            moved = health_keys(client, gateway)[1]
            assert (moved["key_index"], moved["id"], moved["fingerprint"]) == (
                1,
                second["id"],
                "alpha:1:0022",
            )
            for name in ("state", "cooldown_until", "requests", "errors"):
                assert moved[name] == cooling[name], name
            hits = requests_of(fake, VAULT[1])
            for _ in range(4):
                assert chat(client, gateway).json()["key_index"] == 0
            assert requests_of(fake, VAULT[1]) == hits  # still cooling: never chosen
        finally:
            gateway.stop()

    def test_a_vault_key_can_be_disabled_and_enabled_like_an_environment_key(
        self, client: httpx.Client, fake: FakeProviderThread, database: str, tmp_path: Path
    ):
        gateway = vault_gateway(base_env(fake, database, new_master_key()), tmp_path)
        try:
            entry = add(client, gateway, VAULT[0])
            url = f"{gateway.base_url}/api/admin/api-keys/alpha/1"
            off = client.post(f"{url}/disable", headers=AUTH)
            assert off.status_code == 200, off.text
            assert (off.json()["state"], off.json()["source"], off.json()["id"]) == (
                "disabled",
                "vault",
                entry["id"],
            )
            assert all(chat(client, gateway).json()["key_index"] == 0 for _ in range(3))
            assert client.post(f"{url}/enable", headers=AUTH).json()["state"] == "active"
        finally:
            gateway.stop()


class TestRestart:
    def test_after_rotating_the_master_key_a_restart_serves_the_same_keys(
        self, client: httpx.Client, fake: FakeProviderThread, database: str, tmp_path: Path
    ):
        old, new = new_master_key(), new_master_key()
        first = vault_gateway(base_env(fake, database, old), tmp_path / "first")
        try:
            stored = add(client, first, VAULT[0])
        finally:
            first.stop()
        assert run_coro(rotate_master_with_url(database, old, new)).rows == 1

        again = vault_gateway(base_env(fake, database, new), tmp_path / "again")
        try:
            listed = health_keys(client, again)
            assert [(k["source"], k.get("id")) for k in listed] == [
                ("env", None),
                ("vault", stored["id"]),
            ]
            served = {chat(client, again).json()["key_index"] for _ in range(4)}
            assert served == {0, 1}
            assert requests_of(fake, VAULT[0]) == 2
        finally:
            again.stop()


class TestTwoInstances:
    def test_a_key_added_on_one_instance_is_served_by_the_other_within_the_refresh_time(
        self, client: httpx.Client, fake: FakeProviderThread, tmp_path: Path
    ):
        master = new_master_key()
        with throwaway_database("postgres", tmp_path) as database, shared_prefix() as prefix:
            env = {
                **base_env(fake, database, master),
                "VAULT_REFRESH_S": "0.2",
                "REDIS_URL": SHARED_URL,
                "KEYPOOL_REDIS_PREFIX": prefix,
            }
            one = vault_gateway(env, tmp_path / "one")
            two = vault_gateway(env, tmp_path / "two")
            try:
                entry = add(client, one, VAULT[0])
                seen = wait_for(
                    lambda: [k for k in health_keys(client, two) if k.get("id") == entry["id"]],
                    what="the other instance listing the new key",
                )
                assert (seen[0]["key_index"], seen[0]["source"]) == (1, "vault")
                served = {chat(client, two).json()["key_index"] for _ in range(4)}
                assert served == {0, 1}

                client.delete(f"{one.base_url}/api/admin/api-keys/alpha/1", headers=AUTH)
                wait_for(
                    lambda: len(health_keys(client, two)) == 1,
                    what="the other instance dropping the deleted key",
                )
                before = requests_of(fake, VAULT[0])
                assert all(chat(client, two).json()["key_index"] == 0 for _ in range(3))
                assert requests_of(fake, VAULT[0]) == before
            finally:
                one.stop()
                two.stop()


class TestBringYourOwnKey:
    def test_a_users_requests_reach_the_upstream_with_their_key_only(
        self,
        client: httpx.Client,
        fake: FakeProviderThread,
        database: str,
        state_env: dict[str, str],
        tmp_path: Path,
    ):
        env = {
            **base_env(fake, database, new_master_key()),
            **state_env,
            "STATS_FLUSH_INTERVAL_S": "0.05",
        }
        gateway = vault_gateway(env, tmp_path)
        try:
            assert own_key(client, gateway, "alice", OWN).status_code == 200
            mine = [chat(client, gateway, "alice") for _ in range(3)]
            assert [(a.status_code, a.json()["key_index"]) for a in mine] == [(200, "byok")] * 3
            assert mine[0].headers["x-keypool-key-index"] == "byok"
            assert requests_of(fake, OWN) == 3
            assert requests_of(fake, ENV_KEY) == 0
            others = [chat(client, gateway, user) for user in ("bob", None)]
            assert [a.json()["key_index"] for a in others] == [0, 0]
            assert requests_of(fake, OWN) == 3  # nobody else is served with alice's key
            # Stats rows only for the shared key, none under a shared index for alice's key.
            wait_for(lambda: sum(r["total_requests"] for r in stats_rows(database)) == 2)
            rows = stats_rows(database)
            assert {(r["key_index"], r["key_fingerprint"]) for r in rows} <= {
                (0, health_keys(client, gateway)[0]["fingerprint"])
            }
            assert len(health_keys(client, gateway)) == 1  # the shared pool never saw it
            metrics = client.get(f"{gateway.base_url}/metrics").text
            line = 'keypool_upstream_attempts_total{key="byok",provider="alpha",result="ok"} 3.0'
            assert line in metrics
            assert OWN not in metrics

            url = f"{gateway.base_url}/api/admin/users/alice/provider-keys/alpha"
            assert client.delete(url, headers=AUTH).status_code == 200
            assert chat(client, gateway, "alice").json()["key_index"] == 0
        finally:
            gateway.stop()

    def test_errors_name_the_own_key_and_never_fall_back_to_the_shared_pool(
        self, client: httpx.Client, fake: FakeProviderThread, database: str, tmp_path: Path
    ):
        gateway = vault_gateway(base_env(fake, database, new_master_key()), tmp_path)
        try:
            assert own_key(client, gateway, "alice", OWN).status_code == 200
            fake.set_key(OWN, mode="error_500")
            across = chat(client, gateway, "alice")  # Path A: the provider failed, by byok
            assert across.status_code == 503, across.text
            assert {a["key_index"] for a in across.json()["error"]["attempts"]} == {"byok"}
            failed = chat(client, gateway, "alice", NAMED)
            assert failed.status_code == 503, failed.text
            error = failed.json()["error"]
            assert error["type"] == "all_keys_failed"
            assert set(error["errors"]) == {"byok"}
            assert {a["key_index"] for a in error["attempts"]} == {"byok"}
            assert requests_of(fake, ENV_KEY) == 0
            assert OWN not in failed.text
        finally:
            gateway.stop()

    def test_a_429_on_an_own_key_cools_only_that_key(
        self,
        client: httpx.Client,
        fake: FakeProviderThread,
        database: str,
        state_env: dict[str, str],
        tmp_path: Path,
    ):
        env = {**base_env(fake, database, new_master_key()), **state_env}
        gateway = vault_gateway(env, tmp_path)
        try:
            assert own_key(client, gateway, "alice", OWN).status_code == 200
            fake.set_key(OWN, mode="rate_limited", retry_after_s=60)
            limited = chat(client, gateway, "alice", NAMED)
            assert limited.status_code == 429, limited.text
            assert limited.json()["error"]["type"] == "rate_limited"
            assert set(limited.json()["error"]["errors"]) == {"byok"}
            assert int(limited.headers["retry-after"]) >= 59
            again = chat(
                client, gateway, "alice", NAMED
            )  # cooling: refused without an upstream call
            assert again.status_code == 429
            assert requests_of(fake, OWN) == 1
            assert [chat(client, gateway, "bob").status_code for _ in range(3)] == [200] * 3
            assert [k["state"] for k in health_keys(client, gateway)] == ["active"]
        finally:
            gateway.stop()


class TestInFlight:
    def test_a_stream_in_flight_when_an_earlier_key_is_deleted_settles_on_its_own_key(
        self,
        client: httpx.Client,
        fake: FakeProviderThread,
        state_env: dict[str, str],
        tmp_path: Path,
    ):
        database = f"sqlite+aiosqlite:///{tmp_path / 'inflight.db'}"
        env = {**base_env(fake, database, new_master_key()), **state_env}
        gateway = vault_gateway(env, tmp_path / "gw")
        keys_url = f"{gateway.base_url}/api/admin/api-keys/alpha"
        try:
            first, second = add(client, gateway, VAULT[0]), add(client, gateway, VAULT[1])
            for index in (0, 1):
                assert client.post(f"{keys_url}/{index}/disable", headers=AUTH).is_success
            fake.set_key(VAULT[1], chunk_interval_ms=150, chunks=4)
            stream_url = f"{gateway.base_url}/api/chat/stream"
            with (
                httpx.Client(timeout=10) as streaming,
                streaming.stream("POST", stream_url, json=HELLO) as answer,
            ):
                lines = answer.iter_lines()
                start = next(line for line in lines if line.startswith("data:"))
                assert '"key_index":2' in start.replace(" ", "")
                # Meanwhile the first vault key goes: the streaming key moves from 2 to 1.
                assert client.post(f"{keys_url}/0/enable", headers=AUTH).is_success
                removed = client.delete(f"{keys_url}/1", headers=AUTH)
                assert (removed.status_code, removed.json()["id"]) == (200, first["id"])
                assert any('"type":"done"' in line.replace(" ", "") for line in lines)
            settled = wait_for(
                lambda: (
                    [k for k in health_keys(client, gateway) if k["in_flight"] == 0]
                    if all(k["in_flight"] == 0 for k in health_keys(client, gateway))
                    else None
                ),
                what="the stream settled",
            )
            assert [(k["key_index"], k.get("id"), k["requests"]) for k in settled] == [
                (0, None, 0),
                (1, second["id"], 1),
            ]
            assert [k["state"] for k in settled] == ["active", "active"]
        finally:
            gateway.stop()
