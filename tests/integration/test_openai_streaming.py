"""`stream: true` on /v1/chat/completions with the official openai SDK, sync and async, unchanged."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import HELLO, post_stream, sse_data

TEXT = "w0 w1 w2 w3 w4 "
MESSAGES: Any = HELLO["messages"]


@pytest.fixture
def gateway(make_fake: FakeFactory, make_gateway: GatewayFactory) -> GatewayServer:
    fake = make_fake({"bad": {"mode": "stream_fail_before_first"}, "good": {}})
    return make_gateway(provider_env("alpha", fake, ["bad", "good"]))


def sync_client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0)


class TestSyncClient:
    @pytest.mark.parametrize("model", ["auto", "alpha/fake-small", "fake-small"])
    def test_stream_concatenates_to_the_answer(self, gateway: GatewayServer, model: str):
        with sync_client(gateway) as client:
            chunks = list(
                client.chat.completions.create(model=model, messages=MESSAGES, stream=True)
            )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert all(c.usage is None for c in chunks)  # not asked for
        assert len({c.id for c in chunks}) == 1

    def test_include_usage_adds_a_final_usage_chunk(self, gateway: GatewayServer):
        with sync_client(gateway) as client:
            chunks = list(
                client.chat.completions.create(
                    model="auto",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
        *answer, last = chunks
        assert last.choices == []
        assert last.usage is not None
        assert last.usage.completion_tokens == 5
        assert last.usage.total_tokens == last.usage.prompt_tokens + 5
        assert all(c.usage is None for c in answer)
        assert {c.id for c in chunks} == {answer[0].id}  # the stream's own id, not a placeholder

    def test_all_keys_failing_raises_the_status_error(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {"mode": "error_500"}, "k1": {"mode": "reset"}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0", "k1"]))
        with sync_client(gateway) as client, pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="fake-small", messages=MESSAGES, stream=True)
        assert caught.value.status_code == 503
        body: Any = caught.value.body
        assert body["type"] == "api_error"
        assert body["code"] == "all_keys_failed"

    def test_mid_stream_cut_raises_after_the_chunks_sent(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {"mode": "stream_cut", "cut_after": 2}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        received: list[str | None] = []
        with sync_client(gateway) as client:
            stream = client.chat.completions.create(model="auto", messages=MESSAGES, stream=True)
            with pytest.raises(openai.APIError) as caught:
                received.extend(chunk.choices[0].delta.content for chunk in stream)
        assert received == ["w0 ", "w1 "]
        assert "upstream stream failed" in caught.value.message


class TestAsyncClient:
    @pytest.mark.parametrize("include_usage", [False, True])
    async def test_stream(self, gateway: GatewayServer, include_usage: bool):
        client = openai.AsyncOpenAI(
            base_url=f"{gateway.base_url}/v1", api_key="unused", max_retries=0
        )
        async with client:
            stream = await client.chat.completions.create(
                model="auto",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": include_usage},
            )
            chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        usage = chunks[-1].usage
        assert (usage is not None) is include_usage
        if usage is not None:
            assert usage.completion_tokens == 5


class TestWire:
    def test_chunk_events_then_done_marker(self, gateway: GatewayServer):
        body = {"model": "auto", "messages": MESSAGES, "stream": True}
        url = f"{gateway.base_url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-keypool-provider"] == "alpha"
            data = list(sse_data(response.iter_lines()))
        assert data[-1] == "[DONE]"
        events = [orjson.loads(d) for d in data[:-1]]
        assert {e["object"] for e in events} == {"chat.completion.chunk"}

    def test_failure_before_first_chunk_is_plain_json(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        limited = {"mode": "rate_limited", "retry_after_s": 3.0}
        fake = make_fake({"k0": limited})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        body = {"model": "auto", "messages": MESSAGES, "stream": True}
        response, events = post_stream(f"{gateway.base_url}/v1/chat/completions", body)
        assert response.status_code == 429
        assert response.headers["content-type"] == "application/json"
        assert "retry-after" in response.headers
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert events == []
