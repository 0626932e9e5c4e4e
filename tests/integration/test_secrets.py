"""No API key and no admin token in any log line, response body or header, whatever happens."""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.demo.fake_provider import FakeProviderThread
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env

ADMIN = f"admin-{secrets.token_hex(16)}"
# Long, distinctive keys: a fingerprint shows only the last 4 characters of each.
ALPHA = [f"sk-alpha-{i}-{secrets.token_hex(12)}" for i in range(3)]
BETA = [f"sk-beta-{i}-{secrets.token_hex(12)}" for i in range(2)]
GAMMA = [f"sk-gamma-{secrets.token_hex(12)}"]
DELTA = [f"sk-delta-{secrets.token_hex(12)}"]
ECHO = [f"sk-echo-{secrets.token_hex(12)}"]  # its provider quotes it back in a 400's message
METRICS = f"metrics-{secrets.token_hex(16)}"
ALL_SECRETS = [ADMIN, METRICS, *ALPHA, *BETA, *GAMMA, *DELTA, *ECHO]
# Loggers that do not propagate to the root, where caplog listens.
SILOED = ("uvicorn", "uvicorn.access")
MESSAGES = [{"role": "user", "content": "hi"}]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name in SILOED:
        logging.getLogger(name).removeHandler(caplog.handler)


def debug_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    """Uvicorn configures its loggers (levels and handlers) when a server is built: redo it after."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "keypool", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    for name in SILOED:
        logging.getLogger(name).addHandler(caplog.handler)


def start(make_fake: FakeFactory, make_gateway: GatewayFactory) -> tuple[GatewayServer, Any]:
    alpha: FakeProviderThread = make_fake(
        {
            ALPHA[0]: {},
            ALPHA[1]: {"mode": "unauthorized"},
            ALPHA[2]: {"mode": "rate_limited", "retry_after_s": 30.0},
        }
    )
    beta = make_fake({BETA[0]: {"mode": "error_500"}, BETA[1]: {"mode": "forbidden"}})
    delta = make_fake({DELTA[0]: {"mode": "rate_limited", "retry_after_s": 30.0}})
    echo = make_fake({ECHO[0]: {"mode": "echo_key"}})
    env = {
        **provider_env("alpha", alpha, ALPHA, api_key_5=ALPHA[0]),  # a duplicate: warned about
        **provider_env("beta", beta, BETA),
        "GAMMA_API_KEYS": GAMMA[0],
        "GAMMA_BASE_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "GAMMA_DEFAULT_MODEL": "fake-small",
        **provider_env("delta", delta, DELTA),
        **provider_env("echo", echo, ECHO),
        "LLM_PROVIDERS": "alpha,beta,gamma,delta,echo",
        "ADMIN_TOKEN": ADMIN,
        "METRICS_TOKEN": METRICS,
        "CIRCUIT_FAILURE_THRESHOLD": "1000",
        "REQUEST_DEADLINE_S": "1",
        "LOG_LEVEL": "DEBUG",
    }
    return make_gateway(env), alpha


def traffic(client: httpx.Client) -> list[httpx.Response]:
    """Successes, 401/403 keys, 429s, 500s, connection errors, bad input, bad admin tokens."""
    admin = {"Authorization": f"Bearer {ADMIN}"}
    wrong = {"Authorization": f"Bearer {ADMIN[:-1]}x"}
    chat: list[dict[str, Any]] = [
        {},
        {},
        {"model": "alpha/fake-small"},
        {"model": "alpha/ghost"},
        {"model": "beta/fake-small"},
        {"model": "gamma/fake-small"},
        {"model": "delta/fake-small"},
        {"provider": "beta"},
        {"model": "ghost"},
        {"provider": "nope"},
        {"fallback": False},
        {"temperature": 9},
    ]
    answers = [client.post("/api/chat", json={"messages": MESSAGES, **c}) for c in chat]
    answers += [client.post("/api/chat/stream", json={"messages": MESSAGES, **c}) for c in chat[:7]]
    for model in ("auto", "alpha/fake-small", "beta/fake-small", "gamma/fake-small", "delta/x"):
        body = {"model": model, "messages": MESSAGES}
        answers.append(client.post("/v1/chat/completions", json=body))
        answers.append(client.post("/v1/chat/completions", json={**body, "stream": True}))
    answers += [
        client.get("/v1/models"),
        client.post("/api/chat", content=b"{broken"),
        client.post("/api/chat", content=b"x" * (2 * 1024 * 1024)),
        client.get("/api/admin/api-keys/health"),
        client.get("/api/admin/api-keys/health", headers=wrong),
        client.post("/api/admin/api-keys/probe", headers=wrong),
        client.post("/api/admin/api-keys/alpha/0/disable", headers=wrong),
        client.get("/api/admin/api-keys/health", headers=admin),
        client.post("/api/admin/api-keys/probe", headers=admin),
        client.post("/api/admin/api-keys/beta/1/disable", headers=admin),
        client.post("/api/admin/api-keys/beta/1/enable", headers=admin),
        client.get("/api/admin/users/nobody", headers=admin),
        client.get("/readyz"),
        client.get("/nowhere"),
        client.post("/api/chat", json={"messages": MESSAGES, "model": "echo/fake-small"}),
        client.post(
            "/v1/chat/completions", json={"model": "echo/fake-small", "messages": MESSAGES}
        ),
        client.post("/api/chat/stream", json={"messages": MESSAGES, "provider": "echo"}),
        client.get("/metrics"),
        client.get("/metrics", headers={"Authorization": f"Bearer {METRICS[:-1]}x"}),
        client.get("/metrics", headers={"Authorization": f"Bearer {METRICS}"}),
    ]
    return answers


def test_no_secret_in_logs_responses_or_headers(
    make_fake: FakeFactory,
    make_gateway: GatewayFactory,
    all_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
):
    gateway, _ = start(make_fake, make_gateway)
    debug_everywhere(all_logs)
    with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
        answers = traffic(client)
    statuses = {a.status_code for a in answers}
    assert {200, 400, 401, 404, 413, 422, 429, 503} <= statuses
    assert {s for s in statuses if s >= 500} == {503}

    captured = capfd.readouterr()
    texts = {
        "logs": all_logs.text,
        "log args": "\n".join(repr(r.args) + repr(r.exc_info) for r in all_logs.records),
        "stdout/stderr": captured.out + captured.err,
        "responses": "\n".join(a.text + repr(a.headers.multi_items()) for a in answers),
    }
    # The capture really saw the gateway: its access lines, its config warning, fingerprints.
    assert '"POST /api/chat HTTP/1.1" 503' in texts["logs"]
    assert "duplicate key" in texts["logs"]
    assert '"fingerprint":"alpha:0:' in texts["responses"]
    leaks = [(where, s[:12]) for s in ALL_SECRETS for where, text in texts.items() if s in text]
    assert leaks == []
    # Nor any long part of one: the echoing provider's message is cut at 500 characters.
    assert "Incorrect API key: echo:0:" in texts["responses"]  # redacted, then cut
    parts = [(where, s[:12]) for s in ALL_SECRETS for where, t in texts.items() if s[:16] in t]
    assert parts == []
