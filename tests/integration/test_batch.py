"""POST /api/chat/batch over real HTTP: concurrency on distinct keys, per-item errors, bounds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env

HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def batch(client: httpx.Client, gateway: GatewayServer, body: Any) -> httpx.Response:
    return client.post(f"{gateway.base_url}/api/chat/batch", json=body)


def served(fake: FakeProviderThread) -> dict[str, int]:
    return {key: c["requests"] for key, c in fake.stats()["keys"].items()}


def pool(
    make_fake: FakeFactory, make_gateway: GatewayFactory, n: int
) -> tuple[FakeProviderThread, GatewayServer]:
    names = [f"k{i}" for i in range(n)]
    fake = make_fake({key: {} for key in names})
    return fake, make_gateway(provider_env("alpha", fake, names))


class TestDistinctKeys:
    def test_each_request_gets_its_own_key_when_the_pool_has_enough(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = pool(make_fake, make_gateway, 4)
        chat(client, gateway)  # move the round-robin cursor off key 0
        answer = batch(client, gateway, {"requests": [HI] * 4})
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert all(r["ok"] for r in results)
        assert sorted(r["response"]["key_index"] for r in results) == [0, 1, 2, 3]
        assert sorted(served(fake).values()) == [1, 1, 1, 2]

    def test_even_for_one_user_whose_group_prefers_a_single_key(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = pool(make_fake, make_gateway, 3)
        answer = client.post(
            f"{gateway.base_url}/api/chat/batch",
            json={"requests": [HI] * 3},
            headers={"X-User-Id": "batch-user"},
        )
        keys = [r["response"]["key_index"] for r in answer.json()["results"]]
        assert sorted(keys) == [0, 1, 2]
        assert served(fake) == {"k0": 1, "k1": 1, "k2": 1}

    def test_with_fewer_keys_than_requests_they_rotate(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = pool(make_fake, make_gateway, 2)
        answer = batch(client, gateway, {"requests": [HI] * 6})
        keys = [r["response"]["key_index"] for r in answer.json()["results"]]
        assert sorted(keys) == [0, 0, 0, 1, 1, 1]
        assert served(fake) == {"k0": 3, "k1": 3}


class TestResults:
    def test_results_come_back_in_request_order(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        _, gateway = pool(make_fake, make_gateway, 2)
        items = [{**HI, "max_tokens": n} for n in (3, 1, 2)]
        results = batch(client, gateway, {"requests": items}).json()["results"]
        assert [r["response"]["content"] for r in results] == ["w0 w1 w2 ", "w0 ", "w0 w1 "]
        first = results[0]["response"]
        assert set(first) >= {"id", "provider", "model", "path", "key_index", "usage", "attempts"}

    def test_an_invalid_item_is_that_items_error_only(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = pool(make_fake, make_gateway, 2)
        items = [HI, {"messages": []}, "not an object", {**HI, "temperature": 9}, HI]
        answer = batch(client, gateway, {"requests": items})
        assert answer.status_code == 200
        results = answer.json()["results"]
        assert [r["ok"] for r in results] == [True, False, False, False, True]
        for bad in results[1:4]:
            assert bad["error"]["type"] == "invalid_request"
            assert bad["error"]["details"]
        assert sum(served(fake).values()) == 2

    def test_one_failure_does_not_fail_the_others(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {"mode": "unauthorized"}, "k1": {}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0", "k1"]))
        items = [{**HI, "model": "no-such-model"}, HI, {**HI, "model": "alpha/fake-gone"}, HI]
        results = batch(client, gateway, {"requests": items}).json()["results"]
        assert [r["ok"] for r in results] == [False, True, False, True]
        assert results[0]["error"]["type"] == "unknown_model"
        assert results[2]["error"]["type"] == "model_not_found"  # the upstream said 404
        # The dead key k0 failed whoever drew it; those requests fell over to k1.
        assert [results[i]["response"]["key_index"] for i in (1, 3)] == [1, 1]


class TestEnvelope:
    @pytest.mark.parametrize(
        "body",
        [
            {"requests": []},
            {"requests": [HI] * 17},
            {"requests": HI},
            {"requests": "all of them"},
            {},
            [HI],
        ],
    )
    def test_an_invalid_envelope_is_422(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client, body: Any
    ):
        fake, gateway = pool(make_fake, make_gateway, 1)
        answer = batch(client, gateway, body)
        assert answer.status_code == 422
        assert answer.json()["error"]["type"] == "invalid_request"
        assert served(fake) == {"k0": 0}

    def test_sixteen_is_allowed(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake, gateway = pool(make_fake, make_gateway, 16)
        results = batch(client, gateway, {"requests": [HI] * 16}).json()["results"]
        assert sorted(r["response"]["key_index"] for r in results) == list(range(16))
        assert set(served(fake).values()) == {1}


def chat(client: httpx.Client, gateway: GatewayServer) -> None:
    assert client.post(f"{gateway.base_url}/api/chat", json=HI).status_code == 200
