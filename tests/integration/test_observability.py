"""Observability over real HTTP: request ids, metrics after known traffic, the summary,
recent errors, JSON request logs and alerts to a local webhook receiver."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from app.observability.logs import JsonFormatter
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env
from tests.support.streams import post_stream, wait_for
from tests.support.webhook import webhook_receiver

TOKEN = "obs-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HELLO = {"messages": [{"role": "user", "content": "hi"}]}
KEYS = ["obs-key-0000000000", "obs-key-1111111111"]


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted label pairs: value} of one sample name in a Prometheus text page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def gateway_for(make_fake: FakeFactory, make_gateway: GatewayFactory, **env: str) -> GatewayServer:
    fake = make_fake({key: {} for key in KEYS})
    return make_gateway({**provider_env("alpha", fake, KEYS), "ADMIN_TOKEN": TOKEN, **env})


class TestRequestId:
    def test_sent_id_is_echoed_on_every_kind_of_answer(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway)
        url = gateway.base_url
        headers = {"X-Request-Id": "trace-abc-123"}
        with httpx.Client(base_url=url, headers=headers) as client:
            answers = [
                client.post("/api/chat", json=HELLO),
                client.post("/v1/chat/completions", json={**HELLO, "model": "auto"}),
                client.post("/api/chat", json={"messages": []}),  # 422
                client.get("/healthz"),
                client.get("/api/admin/api-keys/health"),  # 401
            ]
        streamed, events = post_stream(f"{url}/api/chat/stream", HELLO, headers)
        assert events[-1]["type"] == "done"
        assert [a.headers["x-request-id"] for a in [*answers, streamed]] == ["trace-abc-123"] * 6
        assert [a.status_code for a in answers] == [200, 200, 422, 200, 401]

    def test_access_refusals_carry_the_id_and_are_counted(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(
            make_fake, make_gateway, AUTH_MODE="token", CORS_ORIGINS="https://app.example"
        )
        with httpx.Client(base_url=gateway.base_url) as client:
            refused = client.post("/api/chat", json=HELLO, headers={"X-Request-Id": "no-key-1"})
            preflight = client.options(
                "/api/chat",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "POST",
                    "X-Request-Id": "preflight-1",
                },
            )
            page = client.get("/metrics").text
        assert refused.status_code == 401
        assert refused.headers["x-request-id"] == "no-key-1"
        assert preflight.headers["x-request-id"] == "preflight-1"
        assert samples(page, "keypool_user_rejections_total") == {(("reason", "unauthorized"),): 1}

    def test_missing_or_unusable_ids_are_replaced(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway)
        with httpx.Client(base_url=gateway.base_url) as client:
            first = client.post("/api/chat", json=HELLO).headers["x-request-id"]
            second = client.post("/api/chat", json=HELLO).headers["x-request-id"]
            too_long = client.post(
                "/api/chat", json=HELLO, headers={"X-Request-Id": "x" * 129}
            ).headers["x-request-id"]
        assert len({first, second, too_long}) == 3
        assert all(len(i) == 32 for i in (first, second, too_long))

    async def test_websocket_accept_carries_the_id(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway)
        url = f"ws://127.0.0.1:{gateway.port}/api/chat/ws"
        async with connect(url, additional_headers={"X-Request-Id": "ws-trace-1"}) as ws:
            assert ws.response is not None
            assert ws.response.headers["x-request-id"] == "ws-trace-1"


class TestMetrics:
    def test_families_and_counts_after_known_traffic(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway)
        with httpx.Client(base_url=gateway.base_url) as client:
            for _ in range(5):
                assert client.post("/api/chat", json=HELLO).status_code == 200
            for _ in range(3):
                body = {**HELLO, "model": "auto"}
                assert client.post("/v1/chat/completions", json=body).status_code == 200
            assert client.post("/api/chat", json={"messages": []}).status_code == 422
            for _ in range(2):
                post_stream(f"{gateway.base_url}/api/chat/stream", HELLO)
            text = client.get("/metrics").text
        requests = samples(text, "keypool_requests_total")
        by_route_status: dict[tuple[str, str], float] = {}
        for labels, value in requests.items():
            label = dict(labels)
            assert set(label) == {"route", "path", "provider", "status"}
            key = (label["route"], label["status"])
            by_route_status[key] = by_route_status.get(key, 0) + value
        assert by_route_status == {
            ("/api/chat", "200"): 5,
            ("/v1/chat/completions", "200"): 3,
            ("/api/chat", "422"): 1,
            ("/api/chat/stream", "200"): 2,
        }
        assert (
            requests[
                (("path", "A"), ("provider", "alpha"), ("route", "/api/chat"), ("status", "200"))
            ]
            == 5
        )
        counts = samples(text, "keypool_request_duration_seconds_count")
        assert counts == {
            (("route", "/api/chat"),): 6,
            (("route", "/v1/chat/completions"),): 3,
            (("route", "/api/chat/stream"),): 2,
        }
        assert samples(text, "keypool_time_to_first_token_seconds_count") == {
            (("provider", "alpha"),): 2
        }
        tokens = samples(text, "keypool_tokens_total")
        assert tokens[(("kind", "completion"), ("provider", "alpha"))] > 0
        attempts = samples(text, "keypool_upstream_attempts_total")
        assert sum(attempts.values()) == 10
        assert {dict(k)["key"] for k in attempts} == {"alpha:0:0000", "alpha:1:1111"}
        for family in (
            "keypool_upstream_duration_seconds",
            "keypool_cost_usd_total",
            "keypool_cache_requests_total",
            "keypool_user_rejections_total",
            "keypool_key_state",
            "keypool_circuit_state",
        ):
            assert f"# TYPE {family.removesuffix('_total')}" in text
        assert all(key not in text for key in KEYS)

    def test_switched_off_metrics_answer_404_and_the_rest_keeps_working(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway, METRICS_ENABLED="false")
        with httpx.Client(base_url=gateway.base_url, headers=AUTH) as client:
            for _ in range(3):
                answer = client.post("/api/chat", json=HELLO, headers={"X-Request-Id": "m-off"})
                assert answer.status_code == 200
                assert answer.headers["x-request-id"] == "m-off"
            scraped = client.get("/metrics")
            summary = client.get("/api/admin/metrics/summary", params={"window": "5m"}).json()
        assert scraped.status_code == 404
        assert scraped.json()["error"]["type"] == "not_found"
        assert "METRICS_ENABLED" in scraped.json()["error"]["message"]
        assert summary["requests"] == 3  # the dashboard's summary does not depend on /metrics
        assert summary["tokens"] > 0


class TestSummary:
    def test_percentiles_follow_a_known_latency_mix(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        fake = make_fake({KEYS[0]: {"latency_ms": 20.0}, KEYS[1]: {"latency_ms": 300.0}})
        gateway = make_gateway({**provider_env("alpha", fake, KEYS), "ADMIN_TOKEN": TOKEN})
        with httpx.Client(base_url=gateway.base_url, headers=AUTH, timeout=10) as client:
            for _ in range(20):  # round robin: 10 fast, 10 slow
                assert client.post("/api/chat", json=HELLO).status_code == 200
            summary = client.get("/api/admin/metrics/summary", params={"window": "5m"}).json()
        assert summary["requests"] == 20
        assert summary["success_rate"] == 1.0
        latency = summary["latency_ms"]
        assert 20 <= latency["p50"] < 150, latency  # the 10th fastest: a 20 ms key
        assert 300 <= latency["p95"] < 600, latency
        assert summary["providers"][0]["name"] == "alpha"
        assert summary["providers"][0]["requests"] == 20
        assert summary["tokens"] > 0

    def test_window_and_auth_are_checked(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway)
        with httpx.Client(base_url=gateway.base_url) as client:
            bad = client.get("/api/admin/metrics/summary?window=2d", headers=AUTH)
            anonymous = client.get("/api/admin/metrics/summary")
            windows = [
                client.get(f"/api/admin/metrics/summary?window={w}", headers=AUTH).json()["window"]
                for w in ("5m", "1h", "24h")
            ]
            series = client.get("/api/admin/metrics/series?minutes=30", headers=AUTH).json()
            too_long = client.get("/api/admin/metrics/series?minutes=5000", headers=AUTH)
        assert bad.status_code == 422
        assert bad.json()["error"]["type"] == "invalid_request"
        assert anonymous.status_code == 401
        assert windows == ["5m", "1h", "24h"]
        assert len(series["points"]) == 30
        assert too_long.status_code == 422

    def test_recent_errors_name_type_and_request_id(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        gateway = gateway_for(make_fake, make_gateway)
        with httpx.Client(base_url=gateway.base_url) as client:
            body = {**HELLO, "model": "no-such-model"}
            failed = client.post("/api/chat", json=body, headers={"X-Request-Id": "bad-1"})
            recent = client.get("/api/admin/errors/recent", headers=AUTH).json()["errors"]
            summary = client.get("/api/admin/metrics/summary", headers=AUTH).json()
        assert failed.status_code == 400
        assert recent[0]["request_id"] == "bad-1"
        assert recent[0]["type"] == "unknown_model"
        assert recent[0]["status"] == 400
        assert summary["errors_by_type"] == {"unknown_model": 1}


class TestRequestLog:
    def test_one_json_line_per_chat_request_with_the_request_id(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
    ):
        gateway = gateway_for(make_fake, make_gateway, LOG_FORMAT="json")
        with (
            caplog.at_level(logging.INFO, "keypool.request"),
            httpx.Client(base_url=gateway.base_url) as client,
        ):
            client.post(
                "/api/chat", json=HELLO, headers={"X-Request-Id": "log-1", "X-User-Id": "ann"}
            )
            client.get("/healthz", headers={"X-Request-Id": "log-2"})
            wait_for(lambda: [r for r in caplog.records if r.name == "keypool.request"])
        lines = [JsonFormatter().format(r) for r in caplog.records if r.name == "keypool.request"]
        assert len(lines) == 1
        entry: dict[str, Any] = orjson.loads(lines[0])
        assert entry["request_id"] == "log-1"
        assert entry["route"] == "/api/chat"
        assert entry["provider"] == "alpha"
        assert entry["key"] in ("alpha:0:0000", "alpha:1:1111")
        assert entry["status"] == 200
        assert entry["user"] == "ann"
        assert entry["latency_ms"] > 0
        assert all(key not in lines[0] for key in KEYS)


class TestAlerts:
    def test_each_incident_reaches_the_webhook_once(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        dead = ["dead-key-0000000000", "dead-key-1111111111"]
        fake = make_fake({**{k: {"mode": "unauthorized"} for k in dead}, **{k: {} for k in KEYS}})
        with webhook_receiver() as receiver:
            env = {
                **provider_env("alpha", fake, dead),
                **provider_env("beta", fake, KEYS),
                "LLM_PROVIDERS": "alpha,beta",
                "ADMIN_TOKEN": TOKEN,
                "ALERT_WEBHOOK_URL": receiver.url,
            }
            gateway = make_gateway(env)
            hub = gateway.server.lifespan.state["runtime"].observability
            with httpx.Client(base_url=gateway.base_url) as client:
                for _ in range(6):
                    assert client.post("/api/chat", json=HELLO).status_code == 200
                wait_for(lambda: receiver.of_type("provider_exhausted"), 10, "alert")
                wait_for(lambda: receiver.of_type("health_degraded"), 10, "alert")
                ticks = hub.watch_ticks
                for _ in range(6):
                    assert client.post("/api/chat", json=HELLO).status_code == 200
                wait_for(lambda: hub.watch_ticks >= ticks + 2, 10, "two more watcher looks")
        exhausted = receiver.of_type("provider_exhausted")
        assert len(exhausted) == 1
        assert exhausted[0]["provider"] == "alpha"
        assert exhausted[0]["severity"] == "critical"
        assert exhausted[0]["at"].endswith("Z")
        degraded = receiver.of_type("health_degraded")
        assert [d["message"] for d in degraded] == [
            "Degraded: only 2/4 keys active; add or fix keys."
        ]

    def test_a_hanging_webhook_never_slows_requests(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        dead = ["dead-key-0000000000"]
        fake = make_fake({dead[0]: {"mode": "unauthorized"}, **{k: {} for k in KEYS}})
        with webhook_receiver(hang=True) as receiver:
            env = {
                **provider_env("alpha", fake, dead),
                **provider_env("beta", fake, KEYS),
                "LLM_PROVIDERS": "alpha,beta",
                "ALERT_WEBHOOK_URL": receiver.url,
            }
            gateway = make_gateway(env)
            with httpx.Client(base_url=gateway.base_url) as client:
                client.post("/api/chat", json=HELLO)
                wait_for(lambda: receiver.arrived, 10, "the webhook call")  # now hanging
                started = time.monotonic()
                statuses = [client.post("/api/chat", json=HELLO).status_code for _ in range(30)]
                elapsed = time.monotonic() - started
        assert statuses == [200] * 30
        assert elapsed < 5.0


def test_a_client_that_leaves_is_logged_at_info_as_499(
    make_fake: FakeFactory, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
):
    fake = make_fake({key: {"ttft_ms": 3000.0} for key in KEYS})
    gateway = make_gateway({**provider_env("alpha", fake, KEYS), "ADMIN_TOKEN": TOKEN})
    with caplog.at_level(logging.INFO, "keypool.request"):
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{gateway.base_url}/api/chat/stream",
                json=HELLO,
                headers={"X-Request-Id": "gone-1"},
                timeout=httpx.Timeout(5.0, read=0.3),
            )
        record = wait_for(
            lambda: [r for r in caplog.records if getattr(r, "request_id", None) == "gone-1"],
            10,
            "the request's log line",
        )[0]
    assert record.status == 499  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO
    assert not [r for r in caplog.records if r.exc_info]


def test_a_client_that_leaves_mid_stream_is_logged_at_info_as_499(
    make_fake: FakeFactory, make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
):
    fake = make_fake({key: {"chunk_interval_ms": 500.0, "chunks": 20} for key in KEYS})
    gateway = make_gateway({**provider_env("alpha", fake, KEYS), "ADMIN_TOKEN": TOKEN})
    with caplog.at_level(logging.INFO, "keypool.request"):
        with httpx.stream(
            "POST",
            f"{gateway.base_url}/api/chat/stream",
            json=HELLO,
            headers={"X-Request-Id": "gone-2"},
            timeout=10,
        ) as answer:
            assert answer.status_code == 200
            next(answer.iter_raw())  # the stream is committed; then the client hangs up
        record = wait_for(
            lambda: [r for r in caplog.records if getattr(r, "request_id", None) == "gone-2"],
            10,
            "the request's log line",
        )[0]
    assert record.status == 499  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO
    assert not [r for r in caplog.records if r.exc_info]
