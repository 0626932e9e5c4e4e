"""User key groups over real HTTP: least-loaded at first sight, group key first, rebalance."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.databases import DB_KINDS, throwaway_database, user_groups
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import wait_for
from tests.support.traffic import post_all

TOKEN = "groups-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = {"messages": [{"role": "user", "content": "hi"}]}
ALPHA = ["sk-alpha-a0", "sk-alpha-a1", "sk-alpha-a2", "sk-alpha-a3"]
BETA = ["sk-beta-b0", "sk-beta-b1", "sk-beta-b2"]
SIZES = {"alpha": len(ALPHA), "beta": len(BETA)}
Starter = Callable[..., "Api"]


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_database(request.param, tmp_path) as url:
        yield url


class Api:
    """One gateway and a kept-alive client to it (a new client per call costs ~20 ms)."""

    def __init__(self, gateway: GatewayServer, client: httpx.Client) -> None:
        self.gateway = gateway
        self.client = client

    def chat(self, user: str | None, **body: Any) -> dict[str, Any]:
        headers = {"X-User-Id": user} if user else {}
        answer = self.client.post("/api/chat", json=HI | body, headers=headers)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        assert result["attempts"] == []
        return result

    def group_of(self, user: str) -> int:
        answer = self.client.get(f"/api/admin/users/{user}", headers=AUTH)
        assert answer.status_code == 200, answer.text
        profile = answer.json()
        assert {"user_id", "api_key_group", "tier", "created_at"} <= set(profile)
        assert profile["user_id"] == user
        group: int = profile["api_key_group"]
        return group


@pytest.fixture
def start(make_fake: FakeFactory, make_gateway: GatewayFactory) -> Iterator[Starter]:
    """``start(url, alpha=…, beta=…)`` → a gateway over two fake providers with those keys."""
    clients: list[httpx.Client] = []

    def factory(url: str, alpha: list[str] = ALPHA, beta: list[str] = BETA) -> Api:
        env = provider_env("alpha", make_fake({k: {} for k in alpha}), alpha)
        env |= provider_env("beta", make_fake({k: {} for k in beta}), beta)
        gateway = make_gateway({**env, "DATABASE_URL": url, "ADMIN_TOKEN": TOKEN})
        clients.append(httpx.Client(base_url=gateway.base_url, timeout=10))
        return Api(gateway, clients[-1])

    yield factory
    for client in clients:
        client.close()


def first_key(group: int, provider: str) -> int:
    return (group - 1) % SIZES[provider]


def spread(groups: dict[str, int]) -> int:
    sizes = Counter(groups.values())
    return max(sizes.values()) - min(sizes.values())


async def test_concurrent_first_sights_fill_groups_evenly_and_once(db_url: str, start: Starter):
    api = start(db_url)
    users = [f"user-{i:03}" for i in range(200)] + ["same"] * 40
    answers = await post_all(
        api.gateway.base_url, "/api/chat", [({"X-User-Id": u}, HI) for u in users], concurrency=240
    )
    assert {status for status, _ in answers} == {200}

    stored = wait_for(lambda: saved if len(saved := user_groups(db_url)) == 201 else None)
    assert set(stored.values()) == {1, 2, 3, 4}
    assert spread(stored) <= 1  # 201 users: 51, 50, 50, 50
    for user, (_, body) in zip(users, answers, strict=True):
        assert body["key_index"] == first_key(stored[user], body["provider"]), user
    assert api.group_of("same") == stored["same"]


def test_the_group_key_is_tried_first_on_every_provider_on_both_paths(db_url: str, start: Starter):
    api = start(db_url)
    routes = {
        "alpha": {"model": "alpha/fake-small"},
        "beta": {"model": "fake-small", "provider": "beta"},
    }
    for i in range(8):  # sequential first sights: groups 1, 2, 3, 4, 1, 2, 3, 4
        user = f"user-{i}"
        group = 1 + i % 4
        for provider, route in routes.items():  # Path B, every time
            for _ in range(2):
                body = api.chat(user, **route)
                assert (body["path"], body["provider"]) == ("B", provider)
                assert body["key_index"] == first_key(group, provider)
        assert api.group_of(user) == group
        seen = {}
        for _ in range(4):  # Path A rotates providers; the group's key leads on each
            body = api.chat(user)
            seen[body["provider"]] = body["key_index"]
        assert seen == {p: first_key(group, p) for p in routes}


def test_body_openai_and_websocket_users_select_the_group_and_strangers_are_404(
    db_url: str, start: Starter
):
    api = start(db_url)
    body = api.chat(None, user_id="in-body", model="alpha/fake-small")  # group 1
    assert (api.group_of("in-body"), body["key_index"]) == (1, 0)

    openai = api.client.post(
        "/v1/chat/completions",
        json={**HI, "model": "alpha/fake-small", "user": "openai-user"},
    )
    assert openai.status_code == 200, openai.text
    assert api.group_of("openai-user") == 2
    assert openai.headers["x-keypool-key-index"] == "1"

    async def websocket_key(suffix: str, headers: dict[str, str]) -> int:
        url = f"ws://127.0.0.1:{api.gateway.port}/api/chat/ws{suffix}"
        async with connect(url, additional_headers=headers) as ws:
            await ws.send(orjson.dumps({**HI, "model": "alpha/fake-small"}).decode())
            start_event = orjson.loads(await ws.recv())
            assert start_event["type"] == "start"
            index: int = start_event["key_index"]
            return index

    assert asyncio.run(websocket_key("?user_id=ws-query", {})) == 2
    assert api.group_of("ws-query") == 3
    assert asyncio.run(websocket_key("", {"X-User-Id": "ws-header"})) == 3
    assert api.group_of("ws-header") == 4

    unknown = api.client.get("/api/admin/users/nobody", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "unknown_user"


def test_fewer_keys_later_serves_everyone_and_rebalance_evens_the_groups(
    db_url: str, start: Starter
):
    before = start(db_url)  # G = 4
    users = [f"r-{i}" for i in range(8)]
    for user in users:
        before.chat(user, model="alpha/fake-small")
    before.gateway.stop()
    assert Counter(user_groups(db_url).values()) == {1: 2, 2: 2, 3: 2, 4: 2}

    after = start(db_url, alpha=ALPHA[:2], beta=BETA[:2])  # G = 2
    for user in users:  # groups 3 and 4 no longer exist: served anyway, by healthy keys
        for route in ({}, {"model": "alpha/fake-small"}, {"model": "beta/fake-small"}):
            after.chat(user, **route)
    rebalance = after.client.post("/api/admin/users/rebalance", headers=AUTH)
    assert rebalance.status_code == 200, rebalance.text
    assert rebalance.json() == {"users": 8, "groups": 2, "moved": 4}
    groups = {u: after.group_of(u) for u in users}
    assert Counter(groups.values()) == {1: 4, 2: 4}
    assert groups == user_groups(db_url)
    for user, group in groups.items():
        assert after.chat(user, model="alpha/fake-small")["key_index"] == group - 1
    again = after.client.post("/api/admin/users/rebalance", headers=AUTH)
    assert again.json() == {"users": 8, "groups": 2, "moved": 0}
