"""MODEL_GROUPS over HTTP: one public name served by two providers, failing over between them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai import OpenAI
from websockets.asyncio.client import connect

from app.demo.fake_provider import FakeProviderConfig, FakeProviderThread, KeyBehaviour
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import post_stream

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def start_fake(keys: dict[str, dict[str, Any]]) -> FakeProviderThread:
    behaviours = {k: KeyBehaviour().with_changes(v) for k, v in keys.items()}
    return FakeProviderThread(FakeProviderConfig(keys=behaviours)).start()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """`smart` = dead/fake-large then live/fake-small; `limited` = two members that only
    rate-limit; `doomed` = nothing works; `streamy` = a member whose streams break before the
    first chunk, then live. `priority` order so the broken member is always tried first."""
    keys: dict[str, dict[str, dict[str, Any]]] = {
        "dead": {"d0": {"mode": "error_500"}, "d1": {"mode": "stream_fail_before_first"}},
        "live": {"l0": {}},
        "sdead": {"s0": {"mode": "stream_fail_before_first"}},
        "slow": {"s0": {"mode": "rate_limited", "retry_after_s": 30.0}},
        "tight": {"t0": {"mode": "rate_limited", "retry_after_s": 30.0}},
    }
    fakes = {name: start_fake(k) for name, k in keys.items()}
    env = {
        "LLM_PROVIDERS": ",".join(keys),
        "PROVIDER_ROTATION": "priority",
        "MODEL_GROUPS": (
            "smart=dead/fake-large,live/fake-small;"
            "limited=slow/fake-small,tight/fake-small;"
            "doomed=dead/fake-small,slow/fake-small;"
            "streamy=sdead/fake-large,live/fake-small"
        ),
        "REQUEST_DEADLINE_S": "1",
    }
    for name, fake in fakes.items():
        env.update(provider_env(name, fake, list(keys[name])))
    server = GatewayServer(env, Path(tmp_path_factory.mktemp("groups"))).start()
    yield server
    server.stop()
    for fake in fakes.values():
        fake.stop()


class TestNativeChat:
    def test_group_fails_over_from_a_dead_provider_to_a_live_one(self, gateway: GatewayServer):
        answer = httpx.post(
            f"{gateway.base_url}/api/chat", json={"messages": MESSAGES, "model": "smart"}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["path"], body["group"]) == ("B", "smart")
        assert (body["provider"], body["model"]) == ("live", "fake-small")
        assert {a["provider"] for a in body["attempts"]} == {"dead"}
        assert answer.headers["x-keypool-provider"] == "live"

    def test_a_plain_model_answer_has_no_group(self, gateway: GatewayServer):
        answer = httpx.post(
            f"{gateway.base_url}/api/chat", json={"messages": MESSAGES, "model": "live/fake-small"}
        )
        assert answer.status_code == 200
        assert "group" not in answer.json()

    def test_group_of_rate_limited_members_is_429_with_errors_per_member(
        self, gateway: GatewayServer
    ):
        answer = httpx.post(
            f"{gateway.base_url}/api/chat", json={"messages": MESSAGES, "model": "limited"}
        )
        assert answer.status_code == 429
        assert int(answer.headers["retry-after"]) >= 1
        error = answer.json()["error"]
        assert error["type"] == "rate_limited"
        assert error["group"] == "limited"
        assert error["errors"] == {"slow": "rate_limited", "tight": "rate_limited"}

    def test_group_of_failing_members_is_503_with_errors_per_member(self, gateway: GatewayServer):
        answer = httpx.post(
            f"{gateway.base_url}/api/chat", json={"messages": MESSAGES, "model": "doomed"}
        )
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert (error["type"], error["group"]) == ("all_providers_failed", "doomed")
        assert error["errors"] == {"dead": "server_error", "slow": "rate_limited"}

    def test_batch_items_name_the_group(self, gateway: GatewayServer):
        answer = httpx.post(
            f"{gateway.base_url}/api/chat/batch",
            json={"requests": [{"messages": MESSAGES, "model": "smart"}, {"messages": MESSAGES}]},
        )
        assert answer.status_code == 200
        first, second = answer.json()["results"]
        assert (first["response"]["group"], first["response"]["provider"]) == ("smart", "live")
        assert "group" not in second["response"]

    def test_naming_a_member_provider_serves_only_that_member(self, gateway: GatewayServer):
        answer = httpx.post(
            f"{gateway.base_url}/api/chat",
            json={"messages": MESSAGES, "model": "smart", "provider": "live"},
        )
        assert answer.status_code == 200
        assert (answer.json()["provider"], answer.json()["group"]) == ("live", "smart")


class TestStreaming:
    def test_stream_commits_only_after_a_member_produced_its_first_chunk(
        self, gateway: GatewayServer
    ):
        response, events = post_stream(
            f"{gateway.base_url}/api/chat/stream", {"messages": MESSAGES, "model": "streamy"}
        )
        assert response.status_code == 200
        start = events[0]
        assert (start["type"], start["group"], start["path"]) == ("start", "streamy", "B")
        assert (start["provider"], start["model"]) == ("live", "fake-small")
        # sdead accepted the stream and dropped it before its first chunk: the gateway had
        # not committed yet, so it fell over to the next member
        assert [a["provider"] for a in start["attempts"]] == ["sdead"]
        assert events[-1]["type"] == "done"
        assert "".join(e["content"] for e in events if e["type"] == "chunk") == "w0 w1 w2 w3 w4 "

    async def test_websocket_start_event_names_the_group(self, gateway: GatewayServer):
        async with connect(f"ws://127.0.0.1:{gateway.port}/api/chat/ws") as ws:
            await ws.send(orjson.dumps({"id": 7, "messages": MESSAGES, "model": "smart"}).decode())
            start = orjson.loads(await ws.recv())
        assert (start["type"], start["id"], start["group"]) == ("start", 7, "smart")
        assert start["provider"] == "live"


class TestOpenAI:
    @pytest.fixture
    def sdk(self, gateway: GatewayServer) -> Iterator[OpenAI]:
        with OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0) as client:
            yield client

    def test_sdk_completion_through_a_group(self, sdk: OpenAI):
        raw = sdk.chat.completions.with_raw_response.create(model="smart", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == "w0 w1 w2 w3 w4 "
        assert raw.headers["x-keypool-provider"] == "live"

    def test_sdk_stream_through_a_group(self, sdk: OpenAI):
        pieces = [
            chunk.choices[0].delta.content or ""
            for chunk in sdk.chat.completions.create(model="smart", messages=MESSAGES, stream=True)
            if chunk.choices
        ]
        assert "".join(pieces) == "w0 w1 w2 w3 w4 "

    def test_models_lists_the_groups(self, sdk: OpenAI):
        ids = [m.id for m in sdk.models.list()]
        assert {"smart", "limited", "doomed", "streamy"} <= set(ids)
        assert sdk.models.retrieve("smart").owned_by == "keypool"


class TestRotation:
    def test_round_robin_rotates_the_first_member(self, tmp_path: Path):
        fakes = {name: start_fake({f"{name}0": {}}) for name in ("one", "two")}
        env = {"LLM_PROVIDERS": "one,two", "MODEL_GROUPS": "pair=one/fake-small,two/fake-small"}
        for name, fake in fakes.items():
            env.update(provider_env(name, fake, [f"{name}0"]))
        server = GatewayServer(env, tmp_path).start()
        try:
            served = [
                httpx.post(
                    f"{server.base_url}/api/chat", json={"messages": MESSAGES, "model": "pair"}
                ).json()["provider"]
                for _ in range(4)
            ]
        finally:
            server.stop()
            for fake in fakes.values():
                fake.stop()
        assert sorted(served) == ["one", "one", "two", "two"]
        assert served[0] != served[1]
