"""The response cache in front of the non-streaming routes, over real HTTP against the fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.redis_server import SHARED_URL, shared_prefix
from tests.support.servers import provider_env
from tests.support.streams import post_stream, wait_for
from tests.support.vault import new_master_key, vault_gateway

ASK = {"messages": [{"role": "user", "content": "what is a cache?"}], "temperature": 0}
V1 = {"model": "auto", **ASK}
KEYS = ["k0", "k1"]


def upstream_calls(fake: FakeProviderThread) -> int:
    return sum(k["requests"] for k in fake.stats()["keys"].values())


class Setup:
    def __init__(self, make_fake: FakeFactory, make_gateway: GatewayFactory, **env: str):
        self.fake = make_fake({k: {} for k in KEYS})
        self.gateway = make_gateway(
            {**provider_env("alpha", self.fake, KEYS), "MODEL_PRICES": "fake-small=10/10", **env}
        )
        self.url = self.gateway.base_url

    def chat(self, body: dict[str, Any], user: str | None = None) -> httpx.Response:
        headers = {"X-User-Id": user} if user else {}
        answer = httpx.post(f"{self.url}/api/chat", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer


@pytest.fixture
def setup(make_fake: FakeFactory, make_gateway: GatewayFactory) -> Setup:
    return Setup(make_fake, make_gateway)


class TestHitMissBypass:
    def test_a_repeat_is_served_without_a_key_or_an_upstream_call(self, setup: Setup):
        first = setup.chat(ASK, "ann")
        assert first.headers["x-keypool-cache"] == "miss"
        assert first.json()["cost_usd"] > 0
        calls = upstream_calls(setup.fake)
        second = setup.chat(ASK, "ann")
        assert second.headers["x-keypool-cache"] == "hit"
        assert upstream_calls(setup.fake) == calls  # no upstream call
        assert second.json()["content"] == first.json()["content"]
        assert second.json()["cost_usd"] == 0
        assert second.headers["x-keypool-cost-usd"] == "0"
        assert second.headers["x-keypool-provider"] == "alpha"

        # Not cacheable (no temperature 0) or opted out: bypass, and the upstream answers.
        for body in ({"messages": ASK["messages"]}, {**ASK, "cache": False}):
            answer = setup.chat(body, "ann")
            assert answer.headers["x-keypool-cache"] == "bypass"
        assert upstream_calls(setup.fake) == calls + 2
        opted_in = {"messages": ASK["messages"], "cache": True}
        assert setup.chat(opted_in, "ann").headers["x-keypool-cache"] == "miss"
        assert setup.chat(opted_in, "ann").headers["x-keypool-cache"] == "hit"

        metrics = httpx.get(f"{setup.url}/metrics").text
        assert 'keypool_cache_requests_total{result="hit"} 2.0' in metrics
        assert 'keypool_cache_requests_total{result="miss"} 2.0' in metrics
        assert 'keypool_cache_requests_total{result="bypass"} 2.0' in metrics

    def test_v1_and_batch_items_use_the_cache_and_streams_never(self, setup: Setup):
        v1 = [httpx.post(f"{setup.url}/v1/chat/completions", json=V1) for _ in range(2)]
        assert [a.headers["x-keypool-cache"] for a in v1] == ["miss", "hit"]
        assert v1[1].json()["choices"] == v1[0].json()["choices"]
        assert float(v1[0].headers["x-keypool-cost-usd"]) > 0
        assert v1[1].headers["x-keypool-cost-usd"] == "0"
        opted_out = httpx.post(f"{setup.url}/v1/chat/completions", json={**V1, "cache": False})
        assert opted_out.headers["x-keypool-cache"] == "bypass"  # the SDK's extra_body
        # /api/chat is another route family, with its own entries.
        assert setup.chat(ASK).headers["x-keypool-cache"] == "miss"

        calls = upstream_calls(setup.fake)
        batch = httpx.post(f"{setup.url}/api/chat/batch", json={"requests": [ASK, ASK]})
        results = batch.json()["results"]
        assert all(r["ok"] and r["response"]["cost_usd"] == 0 for r in results)
        assert upstream_calls(setup.fake) == calls

        for _ in range(2):
            response, events = post_stream(f"{setup.url}/api/chat/stream", ASK)
            assert events[-1]["type"] == "done"
            assert "x-keypool-cache" not in response.headers
        assert upstream_calls(setup.fake) == calls + 2

    def test_errors_are_never_cached(self, make_fake: FakeFactory, make_gateway: GatewayFactory):
        fake = make_fake({"k": {"mode": "bad_request"}})  # a 400 leaves the key usable
        url = make_gateway(provider_env("alpha", fake, ["k"])).base_url
        for calls in (1, 2):
            answer = httpx.post(f"{url}/api/chat", json=ASK)
            assert answer.status_code == 400
            assert answer.json()["error"]["type"] == "upstream_bad_request"
            assert upstream_calls(fake) == calls  # asked again: nothing was stored


class TestScope:
    def test_users_never_see_each_others_answers(self, setup: Setup):
        assert setup.chat(ASK, "ann").headers["x-keypool-cache"] == "miss"
        assert setup.chat(ASK, "bob").headers["x-keypool-cache"] == "miss"
        assert setup.chat(ASK).headers["x-keypool-cache"] == "miss"  # anonymous: one scope
        assert setup.chat(ASK).headers["x-keypool-cache"] == "hit"

    def test_global_scope_shares_answers(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        setup = Setup(make_fake, make_gateway, CACHE_SCOPE="global")
        assert setup.chat(ASK, "ann").headers["x-keypool-cache"] == "miss"
        assert setup.chat(ASK, "bob").headers["x-keypool-cache"] == "hit"

    def test_cache_mode_off_bypasses_everything(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        setup = Setup(make_fake, make_gateway, CACHE_MODE="off")
        assert [setup.chat(ASK).headers["x-keypool-cache"] for _ in range(2)] == ["bypass"] * 2
        assert upstream_calls(setup.fake) == 2


@pytest.fixture
def prefix() -> Iterator[str]:
    with shared_prefix() as p:
        yield p


def test_two_instances_share_answers_through_redis(
    make_fake: FakeFactory, make_gateway: GatewayFactory, prefix: str
):
    fake = make_fake({k: {} for k in KEYS})
    env = {
        **provider_env("alpha", fake, KEYS),
        "REDIS_URL": SHARED_URL,
        "KEYPOOL_REDIS_PREFIX": prefix,
        "CACHE_SCOPE": "global",
    }
    one, two = make_gateway(env), make_gateway(env)
    first = httpx.post(f"{one.base_url}/api/chat", json=ASK)
    assert first.headers["x-keypool-cache"] == "miss"
    calls = upstream_calls(fake)
    # The first instance writes to Redis just after answering: wait until the entry is there.
    with redis.Redis.from_url(SHARED_URL) as client:
        wait_for(lambda: client.keys(f"{prefix}cache:*"), what="the entry in Redis")
    hit = httpx.post(f"{two.base_url}/api/chat", json=ASK)
    assert hit.headers["x-keypool-cache"] == "hit"
    assert upstream_calls(fake) == calls
    assert hit.json()["content"] == first.json()["content"]
    assert hit.json()["cost_usd"] == 0


def test_a_user_with_their_own_key_is_cached_apart_even_in_global_scope(
    make_fake: FakeFactory, tmp_path: Path
):
    own = "sk-own-aaaaaaaaaaaaaaaa0042"
    fake = make_fake({**{k: {} for k in KEYS}, own: {}})
    env = {
        **provider_env("alpha", fake, KEYS),
        "ADMIN_TOKEN": "admin-token-for-cache-tests",
        "KEYPOOL_MASTER_KEY": new_master_key(),
        "CACHE_SCOPE": "global",
    }
    server = vault_gateway(env, tmp_path / "gw")
    try:
        stored = httpx.put(
            f"{server.base_url}/api/admin/users/alice/provider-keys/alpha",
            json={"key": own},
            headers={"Authorization": "Bearer admin-token-for-cache-tests"},
        )
        assert stored.status_code == 200, stored.text

        def chat(user: str) -> str:
            answer = httpx.post(
                f"{server.base_url}/api/chat", json=ASK, headers={"X-User-Id": user}
            )
            assert answer.status_code == 200, answer.text
            return answer.headers["x-keypool-cache"]

        assert chat("alice") == "miss"
        assert chat("bob") == "miss"  # alice's answer is hers alone
        assert chat("carol") == "hit"  # everyone else shares (global scope)
        assert chat("alice") == "hit"
    finally:
        server.stop()
