"""POST /api/chat/stream over real HTTP against the fake provider: events, failover, cuts, leaks."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import provider_env
from tests.support.streams import (
    ADMIN_TOKEN,
    HELLO,
    key_health,
    post_stream,
    sse_data,
    upstream_idle,
    wait_for,
)

FAILING_MODES = ["stream_fail_before_first", "error_500", "rate_limited", "reset"]
TEXT = "w0 w1 w2 w3 w4 "


def chunks_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["content"] for e in events if e["type"] == "chunk")


class TestEvents:
    def test_start_chunks_done(self, make_fake: FakeFactory, make_gateway: GatewayFactory):
        fake = make_fake({"k0": {}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        response, events = post_stream(f"{gateway.base_url}/api/chat/stream", HELLO)

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-keypool-provider"] == "alpha"
        assert response.headers["x-keypool-key-index"] == "0"
        start, *middle, done = events
        assert start == {
            "type": "start",
            "provider": "alpha",
            "model": "fake-small",
            "path": "A",
            "key_index": 0,
            "attempts": [],
        }
        assert {e["type"] for e in middle} == {"chunk"}
        assert chunks_of(events) == TEXT
        assert done["type"] == "done"
        assert done["finish_reason"] == "stop"
        usage = done["usage"]
        assert usage["completion_tokens"] == 5
        assert usage["total_tokens"] == usage["prompt_tokens"] + 5
        assert "estimated" not in usage  # the fake reports usage when asked

    def test_max_tokens_truncates_with_length(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        _, events = post_stream(f"{gateway.base_url}/api/chat/stream", {**HELLO, "max_tokens": 2})
        assert chunks_of(events) == "w0 w1 "
        assert events[-1]["finish_reason"] == "length"


class TestFirstChunkFailover:
    def test_path_b_falls_over_every_pre_token_failure(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        keys = {f"bad{i}": {"mode": mode} for i, mode in enumerate(FAILING_MODES)}
        fake = make_fake({**keys, "good": {}})
        gateway = make_gateway(provider_env("alpha", fake, [*keys, "good"]))
        body = {**HELLO, "model": "fake-small"}
        response, events = post_stream(f"{gateway.base_url}/api/chat/stream", body)

        assert response.status_code == 200
        start = events[0]
        assert start["path"] == "B"
        assert start["key_index"] == len(keys)
        assert [a["key_index"] for a in start["attempts"]] == [0, 1, 2, 3]
        assert [a["error"] for a in start["attempts"]] == [
            "connection_error",
            "server_error",
            "rate_limited",
            "connection_error",
        ]
        assert [a["status"] for a in start["attempts"]] == [None, 500, 429, None]
        assert chunks_of(events) == TEXT
        assert events[-1]["type"] == "done"

    def test_path_a_falls_over_to_the_next_provider(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        keys = {f"a{i}": {"mode": mode} for i, mode in enumerate(FAILING_MODES)}
        fake = make_fake(keys)
        other = make_fake({"b0": {}})
        env = {
            **provider_env("alpha", fake, list(keys)),
            **provider_env("beta", other, ["b0"], model="fake-large"),
            "LLM_PROVIDERS": "alpha,beta",
            "PROVIDER_ROTATION": "priority",
        }
        gateway = make_gateway(env)
        response, events = post_stream(f"{gateway.base_url}/api/chat/stream", HELLO)

        assert response.status_code == 200
        assert response.headers["x-keypool-provider"] == "beta"
        start = events[0]
        assert (start["provider"], start["model"], start["path"]) == ("beta", "fake-large", "A")
        assert [(a["provider"], a["key_index"]) for a in start["attempts"]] == [
            ("alpha", 0),
            ("alpha", 1),
            ("alpha", 2),
            ("alpha", 3),
        ]
        assert chunks_of(events) == TEXT


class TestAllFailBeforeFirstChunk:
    @pytest.mark.parametrize(
        ("model", "kind"), [("fake-small", "all_keys_failed"), (None, "all_providers_failed")]
    )
    def test_plain_json_503(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, model: str | None, kind: str
    ):
        fake = make_fake({"k0": {"mode": "stream_fail_before_first"}, "k1": {"mode": "error_500"}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0", "k1"]))
        body = {**HELLO, "model": model} if model else HELLO
        response, events = post_stream(f"{gateway.base_url}/api/chat/stream", body)

        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert events == []
        assert response.json()["error"]["type"] == kind

    def test_all_rate_limited_is_429_with_retry_after(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        limited = {"mode": "rate_limited", "retry_after_s": 7.0}
        fake = make_fake({"k0": limited, "k1": limited})
        gateway = make_gateway(provider_env("alpha", fake, ["k0", "k1"]))
        response, _ = post_stream(f"{gateway.base_url}/api/chat/stream", HELLO)

        assert response.status_code == 429
        assert response.headers["content-type"] == "application/json"
        assert 1 <= int(response.headers["retry-after"]) <= 7
        assert response.json()["error"]["type"] == "rate_limited"


class TestMidStreamCut:
    def test_two_chunks_then_one_error_event_and_the_key_is_charged(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"sk-cutter": {"mode": "stream_cut", "cut_after": 2}})
        env = {**provider_env("alpha", fake, ["sk-cutter"]), "ADMIN_TOKEN": ADMIN_TOKEN}
        gateway = make_gateway(env)
        response, events = post_stream(f"{gateway.base_url}/api/chat/stream", HELLO)

        assert response.status_code == 200
        assert [e["type"] for e in events] == ["start", "chunk", "chunk", "error"]
        error = events[-1]["error"]
        assert error["type"] == "upstream_stream_error"
        assert (error["provider"], error["key_index"]) == ("alpha", 0)
        assert "sk-cutter" not in orjson.dumps(events).decode()  # no key material in the events
        key = key_health(gateway.base_url, "alpha")[0]
        assert (key["requests"], key["errors"], key["in_flight"]) == (1, 1, 0)


class TestClientDisconnect:
    def test_closing_mid_stream_cancels_upstream(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {"chunks": 10_000, "chunk_interval_ms": 20}})
        env = {**provider_env("alpha", fake, ["k0"]), "ADMIN_TOKEN": ADMIN_TOKEN}
        gateway = make_gateway(env)
        with httpx.Client(timeout=10) as client:
            url = f"{gateway.base_url}/api/chat/stream"
            with client.stream("POST", url, json=HELLO) as response:
                events = sse_data(response.iter_lines())
                assert orjson.loads(next(events))["type"] == "start"
                assert orjson.loads(next(events))["type"] == "chunk"
                assert fake.stats()["streams_open"] == 1
        # the `with` blocks closed the unfinished response, and so the connection

        wait_for(lambda: upstream_idle(fake.stats()), what="upstream idle")
        key = wait_for(
            lambda: next(k for k in key_health(gateway.base_url, "alpha") if not k["in_flight"]),
            what="gateway in_flight 0",
        )
        assert key["errors"] == 0  # the client leaving is not the key's fault

    @pytest.mark.parametrize(
        ("path", "extra"),
        [("/api/chat/stream", {}), ("/v1/chat/completions", {"model": "auto", "stream": True})],
    )
    def test_closing_before_the_first_token_cancels_upstream(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        path: str,
        extra: dict[str, Any],
    ):
        fake = make_fake({"k0": {"mode": "hang"}})
        env = {**provider_env("alpha", fake, ["k0"]), "ADMIN_TOKEN": ADMIN_TOKEN}
        gateway = make_gateway(env)
        body = orjson.dumps({**HELLO, **extra})
        request = (
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(request + body)
            wait_for(lambda: fake.stats()["in_flight"] == 1, what="upstream request open")
        wait_for(lambda: upstream_idle(fake.stats()), what="upstream idle")
        wait_for(
            lambda: key_health(gateway.base_url, "alpha")[0]["in_flight"] == 0,
            what="gateway in_flight 0",
        )


class TestUsageRecorded:
    def test_streamed_tokens_reach_the_key_group_stats(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({"k0": {}})
        env = {
            **provider_env("alpha", fake, ["k0"]),
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "STATS_FLUSH_INTERVAL_S": "0.05",
        }
        gateway = make_gateway(env)
        url = f"{gateway.base_url}/api/chat/stream"
        _, events = post_stream(url, HELLO, headers={"X-User-Id": "carol"})
        total = events[-1]["usage"]["total_tokens"]

        def group_stats() -> dict[str, Any] | None:
            response = httpx.get(
                f"{gateway.base_url}/api/admin/api-keys/health",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            rows = [r for r in response.json()["keyGroupStats"] if r["total_requests"]]
            return rows[0] if rows else None

        row = wait_for(group_stats, what="usage flushed")
        assert (row["total_requests"], row["total_tokens"]) == (1, total)
