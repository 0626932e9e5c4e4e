"""POST /api/chat over real HTTP against the fake provider: rotation, Path A/B, fallback, failures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from app.chat.clients import ClientCache
from app.chat.service import ChatCall, ChatService
from app.config import load_settings
from app.demo.fake_provider import FakeProviderThread
from app.providers.transport import AiohttpTransport
from app.state.build import build_store
from tests.conftest import FakeFactory, GatewayFactory
from tests.support.servers import GatewayServer, provider_env

MESSAGES = [{"role": "user", "content": "hi"}]
ADMIN = "admin-token-for-chat-tests"
DOWN = {"mode": "error_500"}
DEAD = {"mode": "unauthorized"}
LIMITED = {"mode": "rate_limited", "retry_after_s": 2.5}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


def chat(client: httpx.Client, gateway: GatewayServer, **body: Any) -> httpx.Response:
    return client.post(f"{gateway.base_url}/api/chat", json={"messages": MESSAGES, **body})


def served(fake: FakeProviderThread) -> dict[str, int]:
    """Chat requests the fake received per key (probes are counted elsewhere)."""
    return {key: c["requests"] for key, c in fake.stats()["keys"].items()}


def two_providers(make_fake: FakeFactory, make_gateway: GatewayFactory, alpha, beta, **env: str):
    fa, fb = make_fake(alpha), make_fake(beta)
    gateway = make_gateway(
        {
            **provider_env("alpha", fa, list(alpha)),
            **provider_env("beta", fb, list(beta)),
            "LLM_PROVIDERS": "alpha,beta",
            **env,
        }
    )
    return fa, fb, gateway


class UpstreamBadRequestServer:
    """A minimal upstream that rejects every chat body with 400 (the fake never does)."""

    def __init__(self) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                owner.requests += 1
                self.rfile.read(int(self.headers.get("content-length", 0)))
                body = b'{"error": {"message": "max_tokens is too large", "type": "x"}}'
                self.send_response(400)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def rejecting_upstream() -> Iterator[UpstreamBadRequestServer]:
    server = UpstreamBadRequestServer()
    yield server
    server.close()


class TestRotation:
    async def test_concurrent_requests_over_http_spread_evenly(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory
    ):
        keys = ["k0", "k1", "k2"]
        fake = make_fake({key: {} for key in keys})
        gateway = make_gateway(provider_env("alpha", fake, keys))
        limits = httpx.Limits(max_connections=150, max_keepalive_connections=150)
        async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=30) as c:
            body = {"messages": MESSAGES}
            answers = await asyncio.gather(*(c.post("/api/chat", json=body) for _ in range(150)))
        assert {a.status_code for a in answers} == {200}
        assert all(abs(n - 50) <= 1 for n in served(fake).values()), served(fake)

    async def test_3000_concurrent_requests_on_3_keys_serve_1000_each(self, make_fake: FakeFactory):
        """The real ChatService and key pool, over real HTTP, without the client's HTTP overhead."""
        keys = ["k0", "k1", "k2"]
        fake = make_fake({key: {} for key in keys})
        settings = load_settings(provider_env("alpha", fake, keys))
        transport = AiohttpTransport()
        transport.open_session(settings.providers[0].base_url)
        service = ChatService(
            settings.providers, ClientCache(settings.providers, transport), build_store(settings)
        )
        call = ChatCall({"messages": MESSAGES})
        try:
            results = await asyncio.gather(*(service.complete(call) for _ in range(3000)))
        finally:
            await transport.aclose()
        assert all(not r.attempts for r in results)
        by_index = [sum(1 for r in results if r.key_index == i) for i in range(3)]
        assert all(abs(n - 1000) <= 1 for n in by_index), by_index
        assert all(abs(n - 1000) <= 1 for n in served(fake).values()), served(fake)


class TestPathA:
    def test_a_provider_that_is_down_falls_over_to_the_next(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, _, gateway = two_providers(
            make_fake, make_gateway, {"a0": DOWN, "a1": DOWN}, {"b0": {}, "b1": {}}
        )
        answer = chat(client, gateway)
        assert answer.status_code == 200
        body = answer.json()
        assert (body["provider"], body["path"], body["model"]) == ("beta", "A", "fake-small")
        assert body["attempts"] == [
            {"provider": "alpha", "key_index": 0, "error": "server_error", "status": 500},
            {"provider": "alpha", "key_index": 1, "error": "server_error", "status": 500},
        ]
        assert answer.headers["x-keypool-provider"] == "beta"
        assert answer.headers["x-keypool-key-index"] == str(body["key_index"])
        assert served(fa) == {"a0": 1, "a1": 1}

    def test_providers_take_turns(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, fb, gateway = two_providers(make_fake, make_gateway, {"a0": {}}, {"b0": {}})
        providers = [chat(client, gateway).json()["provider"] for _ in range(6)]
        assert providers == ["alpha", "beta"] * 3
        assert served(fa) == {"a0": 3}
        assert served(fb) == {"b0": 3}

    def test_priority_rotation_uses_the_first_healthy_provider(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, _, gateway = two_providers(
            make_fake, make_gateway, {"a0": {}}, {"b0": {}}, PROVIDER_ROTATION="priority"
        )
        assert [chat(client, gateway).json()["provider"] for _ in range(4)] == ["alpha"] * 4
        fa.set_key("a0", mode="error_500")
        assert chat(client, gateway).json()["provider"] == "beta"

    def test_provider_field_restricts_path_a(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, fb, gateway = two_providers(make_fake, make_gateway, {"a0": DOWN}, {"b0": {}})
        answers = [chat(client, gateway, provider="beta") for _ in range(4)]
        assert [(a.status_code, a.json()["provider"]) for a in answers] == [(200, "beta")] * 4
        assert served(fa) == {"a0": 0}
        refused = chat(client, gateway, provider="alpha")
        assert refused.status_code == 503
        assert refused.json()["error"]["errors"] == {"alpha": "server_error"}
        assert served(fb) == {"b0": 4}


class TestPathB:
    def test_routing_rules(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa = make_fake({"a0": {}})
        fb = make_fake({"b0": {}}, models=["fake-small", "fake-large", "org/listed"])
        gateway = make_gateway(
            {
                **provider_env("alpha", fa, ["a0"]),
                **provider_env("beta", fb, ["b0"], models="org/listed"),
                "LLM_PROVIDERS": "alpha,beta",
            }
        )
        cases = [
            ({"model": "fake-large", "provider": "beta"}, ("beta", "fake-large")),
            ({"model": "beta/fake-large"}, ("beta", "fake-large")),
            ({"model": "org/listed"}, ("beta", "org/listed")),
            ({"model": "fake-small"}, ("alpha", "fake-small")),
        ]
        for body, expected in cases:
            answer = chat(client, gateway, **body).json()
            assert (answer["provider"], answer["model"], answer["path"]) == (*expected, "B")
        unknown = chat(client, gateway, model="ghost-model")
        assert unknown.status_code == 400
        assert unknown.json()["error"]["type"] == "unknown_model"
        nobody = chat(client, gateway, model="fake-small", provider="gamma")
        assert (nobody.status_code, nobody.json()["error"]["type"]) == (400, "unknown_provider")
        assert (served(fa), served(fb)) == ({"a0": 1}, {"b0": 3})

    def test_a_dead_key_falls_back_to_the_next_key_never_another_provider(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, fb, gateway = two_providers(
            make_fake, make_gateway, {"a0": DEAD, "a1": {}, "a2": DOWN}, {"b0": {}}
        )
        answer = chat(client, gateway, model="alpha/fake-small").json()
        assert (answer["provider"], answer["key_index"]) == ("alpha", 1)
        assert answer["attempts"] == [
            {"provider": "alpha", "key_index": 0, "error": "auth_failed", "status": 401}
        ]
        fa.set_key("a1", mode="unauthorized")
        failed = chat(client, gateway, model="alpha/fake-small")
        assert failed.status_code == 503
        error = failed.json()["error"]
        assert error["type"] == "all_keys_failed"
        assert (error["provider"], error["model"]) == ("alpha", "fake-small")
        assert error["errors"] == {"0": "failed", "1": "auth_failed", "2": "server_error"}
        assert served(fb) == {"b0": 0}

    def test_upstream_404_is_model_not_found_and_not_retried(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, fb, gateway = two_providers(
            make_fake, make_gateway, {"a0": {}, "a1": {}, "a2": {}}, {"b0": {}}
        )
        answer = chat(client, gateway, model="alpha/ghost-model")
        assert answer.status_code == 404
        assert answer.json()["error"] == {
            "type": "model_not_found",
            "message": "provider 'alpha' does not serve model 'ghost-model'",
            "provider": "alpha",
            "model": "ghost-model",
        }
        assert sum(served(fa).values()) == 1
        assert served(fb) == {"b0": 0}

    @pytest.mark.parametrize("model", [None, "alpha/fake-small"])
    def test_upstream_400_is_returned_at_once(
        self,
        make_fake: FakeFactory,
        make_gateway: GatewayFactory,
        client: httpx.Client,
        rejecting_upstream: UpstreamBadRequestServer,
        model: str | None,
    ):
        fb = make_fake({"b0": {}})
        gateway = make_gateway(
            {
                "ALPHA_API_KEYS": "r0,r1,r2",
                "ALPHA_BASE_URL": rejecting_upstream.base_url,
                "ALPHA_DEFAULT_MODEL": "fake-small",
                **provider_env("beta", fb, ["b0"]),
                "LLM_PROVIDERS": "alpha,beta",
            }
        )
        answer = chat(client, gateway, **({"model": model} if model else {}))
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["type"] == "upstream_bad_request"
        assert "max_tokens is too large" in error["message"]
        assert rejecting_upstream.requests == 1
        assert served(fb) == {"b0": 0}


class TestExhausted:
    def test_all_rate_limited_is_429_with_retry_after(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": LIMITED, "k1": LIMITED})
        # A deadline shorter than the 2.5 s cooldown: answer 429 now instead of waiting it out.
        env = {**provider_env("alpha", fake, ["k0", "k1"]), "REQUEST_DEADLINE_S": "0.5"}
        gateway = make_gateway(env)
        for _ in range(2):  # the second finds both keys cooling and asks nobody
            answer = chat(client, gateway)
            assert answer.status_code == 429
            error = answer.json()["error"]
            assert error["type"] == "rate_limited"
            assert answer.headers["retry-after"].isdigit()
            assert 1 <= int(answer.headers["retry-after"]) <= 3
            assert error["retry_after"] == int(answer.headers["retry-after"])
        assert served(fake) == {"k0": 1, "k1": 1}

    def test_mixed_failures_on_path_b_are_503_by_key_index(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": LIMITED, "k1": DOWN, "k2": DEAD})
        gateway = make_gateway(provider_env("alpha", fake, ["k0", "k1", "k2"]))
        answer = chat(client, gateway, model="fake-small")
        assert answer.status_code == 503
        assert "retry-after" not in answer.headers
        error = answer.json()["error"]
        assert (error["type"], error["provider"], error["model"]) == (
            "all_keys_failed",
            "alpha",
            "fake-small",
        )
        assert error["errors"] == {"0": "rate_limited", "1": "server_error", "2": "auth_failed"}

    def test_mixed_failures_on_path_a_are_503_by_provider(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        _, _, gateway = two_providers(make_fake, make_gateway, {"a0": DOWN}, {"b0": LIMITED})
        answer = chat(client, gateway)
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["type"] == "all_providers_failed"
        assert error["errors"] == {"alpha": "server_error", "beta": "rate_limited"}


class TestKeyFailures:
    def test_401_marks_the_key_failed_and_later_requests_skip_it(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": DEAD, "k1": {}})
        gateway = make_gateway({**provider_env("alpha", fake, ["k0", "k1"]), "ADMIN_TOKEN": ADMIN})
        assert chat(client, gateway).json()["attempts"][0]["status"] == 401
        health = client.get(
            f"{gateway.base_url}/api/admin/api-keys/health",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ).json()
        keys = health["providers"][0]["keys"]
        assert [(k["key_index"], k["state"], k["errors"]) for k in keys] == [
            (0, "failed", 1),
            (1, "active", 0),
        ]
        answers = [chat(client, gateway) for _ in range(6)]
        assert [(a.status_code, a.json()["key_index"]) for a in answers] == [(200, 1)] * 6
        assert served(fake) == {"k0": 1, "k1": 7}

    def test_fallback_false_makes_exactly_one_attempt(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fa, fb, gateway = two_providers(make_fake, make_gateway, {"a0": DOWN, "a1": {}}, {"b0": {}})
        path_b = chat(client, gateway, model="alpha/fake-small", fallback=False)
        assert path_b.status_code == 503
        assert path_b.json()["error"]["errors"] == {"0": "server_error"}
        path_a = chat(client, gateway, fallback=False)  # alpha's turn; the cursor is on a1 now
        assert path_a.status_code == 200
        fa.set_key("a1", mode="error_500")
        path_a = chat(client, gateway, fallback=False)  # beta's turn
        assert path_a.json()["provider"] == "beta"
        failed = chat(client, gateway, fallback=False)  # alpha's turn: one try, no beta
        assert failed.status_code == 503
        assert len(failed.json()["error"]["attempts"]) == 1
        assert sum(served(fa).values()) == 3
        assert served(fb) == {"b0": 1}


class TestProbes:
    def test_healthz_and_readyz(
        self, make_fake: FakeFactory, make_gateway: GatewayFactory, client: httpx.Client
    ):
        fake = make_fake({"k0": {}})
        gateway = make_gateway(provider_env("alpha", fake, ["k0"]))
        alive = client.get(f"{gateway.base_url}/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "ok"})
        ready = client.get(f"{gateway.base_url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "redis": "off"}}
