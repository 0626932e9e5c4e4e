"""The observability hooks in the request path, over real HTTP against the fake provider:
upstream durations per attempt, path/model/attempts/user in the request log, websocket request
ids and records, and each alert (quota_exceeded, circuit_open, provider_exhausted,
budget_warning, budget_exceeded) reaching a local webhook receiver exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from app.observability.logs import JsonFormatter
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import post_stream, wait_for
from tests.support.webhook import Receiver, webhook_receiver

TOKEN = "hooks-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
OK_KEYS = ["ok-key-0000000000", "ok-key-1111111111"]
BAD = "bad-key-2222222222"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def metrics(gateway: GatewayServer) -> str:
    return httpx.get(f"{gateway.base_url}/metrics").text


def request_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        orjson.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "keypool.request"
    ]


async def ws_exchange(gateway: GatewayServer, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send every frame on one socket; the events until each frame's request ended."""
    events: list[dict[str, Any]] = []
    open_ids = {frame["id"] for frame in frames}
    async with connect(f"ws://127.0.0.1:{gateway.port}/api/chat/ws") as ws:
        for frame in frames:
            await ws.send(orjson.dumps(frame).decode())
        while open_ids:
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            events.append(event)
            if event["type"] in ("done", "error"):
                open_ids.discard(event["id"])
    return events


class TestUpstreamAndRequests:
    async def test_every_attempt_is_timed_and_every_request_counted_with_its_path(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({BAD: {"mode": "error_500"}, **{k: {} for k in OK_KEYS}})
        gateway = make_gateway({**provider_env("alpha", fake, [BAD, *OK_KEYS])})
        url = gateway.base_url
        with httpx.Client(base_url=url) as client:
            for _ in range(4):
                assert client.post("/api/chat", json=HELLO).status_code == 200
            for _ in range(2):
                body = {**HELLO, "model": "fake-small"}
                assert client.post("/api/chat", json=body).status_code == 200
        for _ in range(2):
            _, events = post_stream(f"{url}/api/chat/stream", HELLO)
            assert events[-1]["type"] == "done"
        frames = [{**HELLO, "id": i} for i in (1, 2)]
        events = await ws_exchange(gateway, frames)
        assert [e["type"] for e in events].count("done") == 2

        def counted() -> str | None:
            text = metrics(gateway)
            ws = samples(text, "keypool_requests_total")
            routes = {dict(k)["route"] for k in ws}
            return text if "/api/chat/ws" in routes else None

        text = wait_for(counted, what="the websocket requests in /metrics")
        attempts = samples(text, "keypool_upstream_attempts_total")
        durations = samples(text, "keypool_upstream_duration_seconds_count")
        assert sum(attempts.values()) > 10  # the 500 key failed some first attempts
        assert durations == {(("provider", "alpha"),): sum(attempts.values())}
        requests = samples(text, "keypool_requests_total")
        by_route_path: dict[tuple[str, str], float] = defaultdict(float)
        for labels, value in requests.items():
            label = dict(labels)
            by_route_path[label["route"], label["path"]] += value
        assert dict(by_route_path) == {
            ("/api/chat", "A"): 4,
            ("/api/chat", "B"): 2,
            ("/api/chat/stream", "A"): 2,
            ("/api/chat/ws", "A"): 2,
        }
        assert (
            samples(text, "keypool_request_duration_seconds_count")[(("route", "/api/chat/ws"),)]
            == 2
        )


class TestRequestLog:
    def test_json_lines_name_path_model_attempts_and_user(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        caplog: pytest.LogCaptureFixture,
    ):
        dead = ["dead-key-0000000000", "dead-key-1111111111"]
        fake = make_fake({BAD: {"mode": "error_500"}, **{k: {"mode": "forbidden"} for k in dead},
                          **{k: {} for k in OK_KEYS}})  # fmt: skip
        env = {
            **provider_env("alpha", fake, [BAD, OK_KEYS[0]]),
            **provider_env("beta", fake, dead),
            "LLM_PROVIDERS": "alpha,beta",
            "LOG_FORMAT": "json",
        }
        gateway = make_gateway(env)
        with (
            caplog.at_level(logging.INFO, "keypool.request"),
            httpx.Client(base_url=gateway.base_url) as client,
        ):
            first = {**HELLO, "provider": "alpha", "model": "fake-small"}
            headers = {"X-Request-Id": "log-b", "X-User-Id": "ann"}
            assert client.post("/api/chat", json=first, headers=headers).status_code == 200
            v1 = {**HELLO, "model": "auto", "user": "bob"}
            v1_headers = {"X-Request-Id": "log-v1"}
            assert client.post("/v1/chat/completions", json=v1, headers=v1_headers).is_success
            failed = {**HELLO, "provider": "beta", "model": "fake-small"}
            answer = client.post("/api/chat", json=failed, headers={"X-Request-Id": "log-fail"})
            assert answer.status_code == 503
            wait_for(lambda: len(request_lines(caplog)) >= 3, what="three request lines")
        lines = {line["request_id"]: line for line in request_lines(caplog)}
        served = lines["log-b"]
        assert (served["route"], served["path"], served["model"]) == (
            "/api/chat",
            "B",
            "fake-small",
        )
        assert served["attempts"] == 2  # the 500 key first, then the good one
        assert (served["user"], served["status"], served["provider"]) == ("ann", 200, "alpha")
        assert served["key"] == "alpha:1:0000"
        assert lines["log-v1"]["path"] == "A"
        assert lines["log-v1"]["attempts"] >= 1
        assert lines["log-fail"]["attempts"] == 2
        assert lines["log-fail"]["status"] == 503
        assert all(k not in str(lines) for k in [*OK_KEYS, BAD, *dead])


class TestWebsocketIds:
    async def test_every_event_carries_its_frames_request_id(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        caplog: pytest.LogCaptureFixture,
    ):
        fake = make_fake({k: {"chunks": 3} for k in OK_KEYS})
        gateway = make_gateway({**provider_env("alpha", fake, OK_KEYS), "ADMIN_TOKEN": TOKEN})
        frames: list[dict[str, Any]] = [
            {**HELLO, "id": "a", "request_id": "frame-trace-1"},
            {**HELLO, "id": "b"},
            {"messages": [], "id": "c", "request_id": "bad-frame-1"},
            {**HELLO, "id": "d", "request_id": "x" * 200},
        ]
        with caplog.at_level(logging.INFO, "keypool.request"):
            events = await ws_exchange(gateway, frames)
            wait_for(lambda: len(request_lines(caplog)) >= 4, what="four websocket log lines")
        ids: dict[str, set[str]] = defaultdict(set)
        for event in events:
            ids[event["id"]].add(event["request_id"])
        assert ids["a"] == {"frame-trace-1"}
        assert ids["c"] == {"bad-frame-1"}
        [generated] = ids["b"]
        [replaced] = ids["d"]  # too long: a generated one instead
        assert len(generated) == len(replaced) == 32
        assert generated != replaced
        assert [e["type"] for e in events if e["id"] == "c"] == ["error"]
        lines = {line["request_id"]: line for line in request_lines(caplog)}
        assert lines["frame-trace-1"]["route"] == "/api/chat/ws"
        assert lines["frame-trace-1"]["status"] == 200
        assert lines["bad-frame-1"]["status"] == 422
        with httpx.Client(base_url=gateway.base_url, headers=AUTH) as client:
            summary = client.get("/api/admin/metrics/summary").json()
            recent = client.get("/api/admin/errors/recent").json()["errors"]
        assert summary["requests"] == 4
        assert summary["errors_by_type"] == {"invalid_request": 1}
        assert recent[0]["request_id"] == "bad-frame-1"


def wait_alerts(receiver: Receiver, *kinds: str) -> None:
    for kind in kinds:
        wait_for(partial(receiver.of_type, kind), 10, f"a {kind} alert")


class TestAlerts:
    def test_quota_circuit_and_exhaustion_each_alert_once(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        caplog: pytest.LogCaptureFixture,
    ):
        quota, broken = "quota-key-0000000000", ["broken-0000000000", "broken-1111111111"]
        dead = ["dead-key-0000000000", "dead-key-1111111111"]
        fake = make_fake(
            {
                quota: {"mode": "quota_exceeded"},
                OK_KEYS[0]: {},
                **{k: {"mode": "error_500"} for k in broken},
                **{k: {"mode": "unauthorized"} for k in dead},
            }
        )
        with webhook_receiver() as receiver, caplog.at_level(logging.INFO, "keypool.state"):
            env = {
                **provider_env("alpha", fake, [quota, OK_KEYS[0]]),
                **provider_env("beta", fake, broken),
                **provider_env("gamma", fake, dead),
                "LLM_PROVIDERS": "alpha,beta,gamma",
                "CIRCUIT_FAILURE_THRESHOLD": "2",
                "CIRCUIT_RESET_S": "600",
                "ADMIN_TOKEN": TOKEN,
                "ALERT_WEBHOOK_URL": receiver.url,
            }
            gateway = make_gateway(env)
            hub = gateway.server.lifespan.state["runtime"].observability
            with httpx.Client(base_url=gateway.base_url) as client:

                def ask(provider: str) -> int:
                    body = {**HELLO, "provider": provider, "model": "fake-small"}
                    return client.post("/api/chat", json=body).status_code

                assert [ask("alpha") for _ in range(4)] == [200] * 4  # the quota key falls over
                assert [ask("beta") for _ in range(3)] == [503] * 3  # breaker opens on the first
                assert [ask("gamma") for _ in range(3)] == [503] * 3  # no key left after the first
                wait_alerts(receiver, "quota_exceeded", "circuit_open", "provider_exhausted")
                ticks = hub.watch_ticks
                assert [ask("gamma") for _ in range(2)] == [503] * 2
                wait_for(lambda: hub.watch_ticks >= ticks + 2, 10, "two more watcher looks")
        by_type: dict[str, list[str | None]] = defaultdict(list)
        for alert in receiver.bodies:
            by_type[alert["type"]].append(alert.get("provider"))
        assert by_type["quota_exceeded"] == ["alpha"]
        assert by_type["circuit_open"] == ["beta"]
        assert by_type["provider_exhausted"] == ["gamma"]
        assert receiver.of_type("quota_exceeded")[0]["severity"] == "critical"
        changes = [r.getMessage() for r in caplog.records if r.name == "keypool.state"]
        assert changes.count("circuit beta: closed -> open") == 1
        for index, secret in enumerate(dead):
            assert (
                changes.count(f"key gamma:{index}:{secret[-4:]}: active -> failed (auth_failed)")
                == 1
            )
        quota_line = f"key alpha:0:{quota[-4:]}: active -> failed (quota_exceeded)"
        assert quota_line in changes

    def test_budget_warning_and_budget_exceeded_alert_once_per_user(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        caplog: pytest.LogCaptureFixture,
    ):
        fake = make_fake({k: {} for k in OK_KEYS})
        with webhook_receiver() as receiver:
            env = {
                **provider_env("alpha", fake, OK_KEYS),
                "AUTH_MODE": "token",
                "MODEL_PRICES": "fake-small=1000/1000",
                "ADMIN_TOKEN": TOKEN,
                "ALERT_WEBHOOK_URL": receiver.url,
                "LOG_FORMAT": "json",
            }
            gateway = make_gateway(env)
            url = gateway.base_url
            created = httpx.post(
                f"{url}/api/admin/clients",
                json={"user_id": "alice", "daily_budget_usd": 1.0},
                headers=AUTH,
            )
            key = created.json()["key"]
            client_auth = {"Authorization": f"Bearer {key}", "X-Request-Id": "as-alice"}
            with caplog.at_level(logging.INFO, "keypool.request"):
                assert httpx.post(f"{url}/api/chat", json=HELLO, headers=client_auth).is_success
                wait_for(lambda: request_lines(caplog), what="the request line")
            access = gateway.server.lifespan.state["access"]
            assert gateway.loop is not None
            spend = access.record
            # Spend booked as the chat path does (SpendSink), in larger steps.
            for tokens in (425, 10, 150):  # $0.85 (warned), $0.87, $1.17 (spent)
                gateway.loop.call_soon_threadsafe(
                    spend, "alice", "alpha", "fake-small", tokens, tokens
                )
            wait_alerts(receiver, "budget_warning")

            def refused() -> bool:
                answer = httpx.post(f"{url}/api/chat", json=HELLO, headers=client_auth)
                return answer.status_code == 429

            wait_for(refused, what="the budget refusal")
            assert all(refused() for _ in range(3))
            wait_alerts(receiver, "budget_exceeded")
            assert all(refused() for _ in range(2))
        users = [(a["type"], a.get("user_id")) for a in receiver.bodies if "budget" in a["type"]]
        assert users == [("budget_warning", "alice"), ("budget_exceeded", "alice")]
        [line] = [line for line in request_lines(caplog) if line["request_id"] == "as-alice"]
        assert line["user"] == "alice"  # the authenticated user, never the key
        assert key not in str(request_lines(caplog))
